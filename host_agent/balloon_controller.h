#pragma once

// The balloon controller's decisions: how big each guest's balloon should be, from the memory
// statistics its virtio-balloon driver reports. Memory an idle guest does not use goes back to
// the node (the balloon inflates down to a floor); a guest that needs it gets it back at once
// (the balloon deflates fully) when its available memory runs low, its major faults climb or
// it swaps. Pure logic on readings: VmManager feeds it what QMP says and applies the targets.
// Not thread-safe: one caller (the agent's monitor) at a time.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace ppn::host {

// One reading of a guest's memory.
struct BalloonReading {
  uint64_t memory_mib = 0;  // the VM's configured memory
  uint64_t actual_mib = 0;  // what the guest has now (query-balloon)
  // The guest's own statistics (QOM guest-stats); false when its driver has not reported yet
  // or reported long ago (the controller then never inflates and deflates what it took).
  bool has_stats = false;
  uint64_t available_mib = 0;  // MemAvailable: free plus reclaimable page cache
  uint64_t free_mib = 0;
  uint64_t major_faults = 0;  // cumulative
  uint64_t swap_in_mib = 0;   // cumulative
  absl::Time stats_time;      // when the guest made them
};

// Reads a QOM guest-stats answer ({"stats": {"stat-available-memory": BYTES, ...},
// "last-update": SECONDS}) into `*reading` (has_stats false when it holds nothing usable, or
// stats older than `max_age` at `now`).
void ParseGuestStats(const nlohmann::json& answer, absl::Time now, absl::Duration max_age, BalloonReading* reading);

struct BalloonPolicy {
  // A VM without min_memory_mib keeps at least this fraction of its memory (and min_floor_mib).
  double floor_fraction = 0.25;
  uint64_t min_floor_mib = 64;
  // After inflating, the guest still has this much available (the larger of the two).
  uint64_t headroom_mib = 96;
  double headroom_fraction = 0.15;
  // Below this much available (the larger of the two) the balloon deflates fully, at once.
  uint64_t low_available_mib = 64;
  double low_available_fraction = 0.08;
  // A guest whose use (its memory minus what is available) grows so fast that it would fall
  // below the low mark within this long is deflated now, not one poll too late.
  absl::Duration growth_horizon = absl::Seconds(3);
  // Major faults per second above which the balloon deflates fully (the guest is thrashing).
  double max_major_faults_per_second = 100;
  // Changes smaller than this are not worth a QMP command (and would make the balloon hunt).
  uint64_t min_change_mib = 16;
  // At most this much is taken from a guest per decision: inflation is gradual, deflation not.
  uint64_t max_inflate_step_mib = 256;
  // After a deflation for pressure, no inflation of that guest for this long.
  absl::Duration quiet_after_pressure = absl::Seconds(30);
};

struct BalloonDecision {
  std::optional<uint64_t> target_mib;  // set: send this balloon target
  std::string reason;                  // "idle", "low-available", "major-faults", "swap-in", "no-stats", ...
  bool pressure = false;               // the guest needed its memory back
};

class BalloonController {
 public:
  explicit BalloonController(BalloonPolicy policy = {}) : policy_(policy) {}

  // The smallest the guest is ever made: `min_memory_mib` when set (at most its memory),
  // otherwise the policy's fraction of `memory_mib`.
  uint64_t FloorMib(uint64_t memory_mib, uint64_t min_memory_mib) const;

  // The target for VM `vm_id` after `reading` at `now` (its spec's `min_memory_mib`, 0 for the
  // default floor). Keeps per-VM history (fault and growth rates, last target, last pressure).
  BalloonDecision Decide(const std::string& vm_id, uint64_t min_memory_mib, const BalloonReading& reading,
                         absl::Time now);

  // The last target sent to `vm_id`, if any.
  std::optional<uint64_t> TargetMib(const std::string& vm_id) const;
  // Forgets a VM that is gone (or that an operator now sizes by hand).
  void Forget(const std::string& vm_id) { vms_.erase(vm_id); }
  // The VMs it keeps history of.
  std::vector<std::string> VmIds() const;

  const BalloonPolicy& policy() const { return policy_; }

 private:
  struct History {
    bool has_faults = false;
    uint64_t major_faults = 0;
    uint64_t swap_in_mib = 0;
    absl::Time faults_time;
    // The last sample taken with the balloon at rest: the guest's use (actual minus available).
    bool has_used = false;
    uint64_t used_mib = 0;
    absl::Time used_time;
    absl::Time settled = absl::InfinitePast();  // since when the balloon is at its target
    std::optional<uint64_t> target_mib;
    absl::Time last_pressure = absl::InfinitePast();
  };
  const BalloonPolicy policy_;
  std::map<std::string, History> vms_;
};

// How much of the memory balloons have taken back counts as free for new VMs: three quarters,
// so that guests taking some of it back before the fleet hears of it do not overcommit the
// node past its safety margin. fleet/placement.h applies the same rule (ReclaimedCreditMib).
inline uint64_t ReclaimedCreditMib(uint64_t reclaimed_mib) { return reclaimed_mib / 4 * 3; }

}  // namespace ppn::host
