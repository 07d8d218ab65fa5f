#include "host_agent/balloon_controller.h"

#include <algorithm>

namespace ppn::host {
namespace {

constexpr uint64_t kMib = uint64_t{1} << 20;

// A statistic the guest reported, or nullopt: QEMU says -1 (or leaves it out) for what the
// guest's driver does not report.
std::optional<uint64_t> Stat(const nlohmann::json& stats, const char* name) {
  auto it = stats.find(name);
  if (it == stats.end() || !it->is_number_integer()) return std::nullopt;
  int64_t v = it->get<int64_t>();
  if (v < 0) return std::nullopt;
  return static_cast<uint64_t>(v);
}

}  // namespace

void ParseGuestStats(const nlohmann::json& answer, absl::Time now, absl::Duration max_age, BalloonReading* reading) {
  reading->has_stats = false;
  if (!answer.is_object()) return;
  auto stats = answer.find("stats");
  auto updated = answer.find("last-update");
  if (stats == answer.end() || !stats->is_object() || updated == answer.end() || !updated->is_number_integer()) return;
  int64_t seconds = updated->get<int64_t>();
  if (seconds <= 0) return;  // the driver has not reported since polling was enabled
  absl::Time when = absl::FromUnixSeconds(seconds);
  // One second of slack: QEMU stamps whole seconds.
  if (now - when > max_age + absl::Seconds(1)) return;
  std::optional<uint64_t> available = Stat(*stats, "stat-available-memory");
  if (!available.has_value()) return;  // without it nothing safe can be decided
  reading->available_mib = *available / kMib;
  reading->free_mib = Stat(*stats, "stat-free-memory").value_or(0) / kMib;
  reading->major_faults = Stat(*stats, "stat-major-faults").value_or(0);
  reading->swap_in_mib = Stat(*stats, "stat-swap-in").value_or(0) / kMib;
  reading->stats_time = when;
  reading->has_stats = true;
}

uint64_t BalloonController::FloorMib(uint64_t memory_mib, uint64_t min_memory_mib) const {
  if (min_memory_mib > 0) return std::min(min_memory_mib, memory_mib);
  uint64_t floor = static_cast<uint64_t>(static_cast<double>(memory_mib) * policy_.floor_fraction);
  return std::min(memory_mib, std::max(floor, policy_.min_floor_mib));
}

std::optional<uint64_t> BalloonController::TargetMib(const std::string& vm_id) const {
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return std::nullopt;
  return it->second.target_mib;
}

std::vector<std::string> BalloonController::VmIds() const {
  std::vector<std::string> ids;
  for (const auto& [id, _] : vms_) ids.push_back(id);
  return ids;
}

BalloonDecision BalloonController::Decide(const std::string& vm_id, uint64_t min_memory_mib, const BalloonReading& r,
                                          absl::Time now) {
  History& h = vms_[vm_id];
  const uint64_t full = r.memory_mib;
  auto send = [&](uint64_t target, const char* reason, bool pressure) {
    BalloonDecision d;
    d.reason = reason;
    d.pressure = pressure;
    // Sent again when the balloon is not where it was told to be (QEMU restarted, a lost command).
    bool there = r.actual_mib + policy_.min_change_mib > target && target + policy_.min_change_mib > r.actual_mib;
    if (h.target_mib == target && there) return d;
    h.target_mib = target;
    h.settled = absl::InfiniteFuture();  // moving until seen at its target
    h.has_used = false;
    d.target_mib = target;
    return d;
  };
  const bool at_target = !h.target_mib || (r.actual_mib + policy_.min_change_mib > *h.target_mib &&
                                           *h.target_mib + policy_.min_change_mib > r.actual_mib);
  if (at_target && h.settled == absl::InfiniteFuture()) h.settled = now;
  // The guest's statistics arrive once a second, QOM's actual size at once: only a sample
  // made after the balloon came to rest says what the guest has at that size.
  const bool at_rest = r.has_stats && r.stats_time > h.settled;
  const bool taken = r.actual_mib + policy_.min_change_mib <= full || (h.target_mib && *h.target_mib < full);

  if (!r.has_stats) {
    // Nothing is known of what the guest needs: it gets back whatever was taken.
    if (taken) return send(full, "no-stats", false);
    return {std::nullopt, "no-stats", false};
  }

  const char* pressure = nullptr;
  uint64_t low = std::max(policy_.low_available_mib,
                          static_cast<uint64_t>(static_cast<double>(full) * policy_.low_available_fraction));
  if (r.available_mib < low) pressure = "low-available";
  const uint64_t used = r.actual_mib > r.available_mib ? r.actual_mib - r.available_mib : 0;
  bool grew = false;  // use grew since the last sample at rest: not the time to take memory
  if (at_rest && h.has_used && r.stats_time > h.used_time) {
    grew = used >= h.used_mib + policy_.min_change_mib;
    // Growth of use (its size minus what is available) between two samples at one size.
    double seconds = absl::ToDoubleSeconds(r.stats_time - h.used_time);
    double growth = used > h.used_mib ? static_cast<double>(used - h.used_mib) / seconds : 0;
    if (pressure == nullptr && r.available_mib < low + growth * absl::ToDoubleSeconds(policy_.growth_horizon)) {
      pressure = "growing";
    }
  }
  if (at_rest && (!h.has_used || r.stats_time > h.used_time)) {
    h.has_used = true;
    h.used_mib = used;
    h.used_time = r.stats_time;
  }
  if (h.has_faults && r.stats_time > h.faults_time) {
    double seconds = absl::ToDoubleSeconds(r.stats_time - h.faults_time);
    double faults = r.major_faults >= h.major_faults ? static_cast<double>(r.major_faults - h.major_faults) : 0;
    if (pressure == nullptr && faults / seconds > policy_.max_major_faults_per_second) pressure = "major-faults";
    if (pressure == nullptr && r.swap_in_mib > h.swap_in_mib) pressure = "swap-in";
  }
  // Rates only between two different guest samples (QEMU repeats one until the next poll).
  if (!h.has_faults || r.stats_time > h.faults_time) {
    h.has_faults = true;
    h.major_faults = r.major_faults;
    h.swap_in_mib = r.swap_in_mib;
    h.faults_time = r.stats_time;
  }
  if (pressure != nullptr) {
    h.last_pressure = now;
    if (taken) return send(full, pressure, true);
    return {std::nullopt, pressure, true};
  }

  uint64_t headroom =
      std::max(policy_.headroom_mib, static_cast<uint64_t>(static_cast<double>(full) * policy_.headroom_fraction));
  if (r.available_mib < headroom && r.actual_mib < full) {
    // Short of headroom but not in trouble: give back just enough.
    uint64_t target = std::min(full, r.actual_mib + (headroom - r.available_mib));
    if (target >= r.actual_mib + policy_.min_change_mib) return send(target, "short", false);
    return {};
  }

  // Idle memory: inflate, one step at a time, once the balloon reached its last target.
  if (now - h.last_pressure < policy_.quiet_after_pressure) return {std::nullopt, "quiet", false};
  if (!at_rest) return {std::nullopt, "moving", false};
  if (grew) return {std::nullopt, "busy", false};
  if (r.available_mib <= headroom + policy_.min_change_mib) return {};
  uint64_t floor = FloorMib(full, min_memory_mib);
  uint64_t take = std::min(r.available_mib - headroom, policy_.max_inflate_step_mib);
  uint64_t target = r.actual_mib > floor + take ? r.actual_mib - take : floor;
  if (target + policy_.min_change_mib > r.actual_mib) return {};
  return send(target, "idle", false);
}

}  // namespace ppn::host
