#include "mesh/mesh_agent.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace ppn::mesh {
namespace {

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MeshAgent>> MeshAgent::Create(MeshAgentOptions options, Device* device,
                                                             MembershipSource* source, Clock* clock) {
  absl::StatusOr<PeerTable> table = PeerTable::Create(options.table);
  if (!table.ok()) return table.status();
  return std::unique_ptr<MeshAgent>(new MeshAgent(std::move(options), std::move(*table), device, source, clock));
}

void MeshAgent::Start() {
  thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock l(&mu_);
        if (stopping_) return;
      }
      RunOnce(options_.poll);
    }
  });
}

void MeshAgent::Stop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void MeshAgent::SetTunnelError(const std::string& error) {
  if (error == tunnel_error_) return;
  if (!error.empty()) {
    spdlog::error("mesh.tunnel_error interface={} error={}", device_->name(), LogValue(error));
  } else if (!tunnel_error_.empty()) {
    spdlog::info("mesh.tunnel_ok interface={}", device_->name());
  }
  tunnel_error_ = error;
}

void MeshAgent::BringUp() {
  {
    absl::MutexLock l(&mu_);
    if (device_up_ || clock_->Now() - last_up_attempt_ < options_.up_retry) return;
    last_up_attempt_ = clock_->Now();
  }
  absl::StatusOr<UpResult> up = device_->Up();
  absl::MutexLock l(&mu_);
  if (!up.ok()) {
    SetTunnelError(std::string(up.status().message()));
    return;
  }
  device_up_ = true;
  dirty_ = true;
  backend_ = up->backend;
  adopted_ = up->adopted;
  forwarding_ = false;  // a new interface starts without it
  SetTunnelError("");
  spdlog::info("mesh.up interface={} backend={} adopted={}", device_->name(), up->backend, up->adopted);
}

void MeshAgent::RunOnce(absl::Duration wait) {
  BringUp();
  absl::StatusOr<MembershipBatch> batch = source_->Next(wait);
  {
    absl::MutexLock l(&mu_);
    if (!batch.ok()) {
      std::string error(batch.status().message());
      if (error != membership_error_) spdlog::warn("mesh.membership_unavailable error={}", LogValue(error));
      membership_error_ = error;
    } else {
      if (!membership_error_.empty()) spdlog::info("mesh.membership_ok next_index={}", table_.next_index());
      membership_error_.clear();
      for (const ppn::ledger::v1::Entry& e : batch->entries) {
        std::optional<Rejection> r = table_.Apply(e);
        dirty_ = true;
        if (r.has_value()) {
          spdlog::warn("mesh.entry_rejected index={} kind={} subject={} reason={}", r->index, LogValue(r->kind),
                       LogValue(r->subject), LogValue(r->reason));
        }
      }
      if (batch->caught_up && !caught_up_) {
        spdlog::info("mesh.caught_up next_index={} nodes={}", table_.next_index(), table_.LiveNodes().size());
        caught_up_ = true;
        dirty_ = true;
      }
    }
    if (!device_up_ || !caught_up_) return;
    if (!dirty_ && clock_->Now() - last_sync_ < options_.resync) return;
  }
  Reconcile();
}

void MeshAgent::Reconcile() {
  PeerTableView view;
  {
    absl::MutexLock l(&mu_);
    view = table_.Compute();
  }
  absl::StatusOr<DeviceState> state = device_->State();
  if (!state.ok() || !state->up) {
    absl::MutexLock l(&mu_);
    // Gone behind our back (or not answering): bring it up again on the next pass.
    device_up_ = false;
    last_up_attempt_ = absl::InfinitePast();
    SetTunnelError(state.ok() ? absl::StrCat("interface ", device_->name(), " disappeared")
                              : std::string(state.status().message()));
    return;
  }
  std::map<std::string, const PeerState*> current;
  for (const PeerState& p : state->peers) current[p.public_key] = &p;
  std::vector<PeerUpdate> updates;
  std::vector<std::string> added, removed, changed;
  std::set<std::string> wanted;
  std::map<std::string, std::string> applied;
  {
    absl::MutexLock l(&mu_);
    applied = applied_endpoints_;
  }
  for (const MeshPeer& peer : view.peers) {
    wanted.insert(peer.public_key);
    auto cur = current.find(peer.public_key);
    auto last = applied.find(peer.public_key);
    bool present = cur != current.end();
    bool set_endpoint = !peer.endpoint.empty() && (!present || cur->second->endpoint.empty() ||
                                                   (last != applied.end() && last->second != peer.endpoint));
    bool same = present && Sorted(cur->second->allowed_ips) == Sorted(peer.allowed_ips) &&
                cur->second->persistent_keepalive_seconds == peer.persistent_keepalive_seconds;
    applied[peer.public_key] = peer.endpoint;
    if (same && !set_endpoint) continue;
    PeerUpdate u;
    u.peer = {peer.public_key, peer.endpoint, peer.allowed_ips, peer.persistent_keepalive_seconds};
    u.set_endpoint = set_endpoint;
    updates.push_back(std::move(u));
    (present ? changed : added).push_back(peer.node_name);
  }
  for (const auto& [key, p] : current) {
    if (wanted.count(key) > 0) continue;
    PeerUpdate u;
    u.peer.public_key = key;
    u.remove = true;
    updates.push_back(std::move(u));
    removed.push_back(key.substr(0, 8));
    applied.erase(key);
  }
  absl::Status updated = updates.empty() ? absl::OkStatus() : device_->UpdatePeers(updates);
  absl::Status forwarded = absl::OkStatus();
  bool need_forwarding = false;
  {
    absl::MutexLock l(&mu_);
    need_forwarding = view.forwarding && !forwarding_;
  }
  if (updated.ok() && need_forwarding) forwarded = device_->EnableForwarding();
  absl::MutexLock l(&mu_);
  if (!updated.ok() || !forwarded.ok()) {
    SetTunnelError(std::string((updated.ok() ? forwarded : updated).message()));
    return;  // dirty_ stays set: the next pass tries again
  }
  if (need_forwarding) forwarding_ = true;
  applied_endpoints_ = std::move(applied);
  dirty_ = false;
  last_sync_ = clock_->Now();
  SetTunnelError("");
  if (!updates.empty()) {
    spdlog::info("mesh.peers_updated interface={} added={} changed={} removed={} peers={}", device_->name(),
                 LogValue(absl::StrJoin(added, ",")), LogValue(absl::StrJoin(changed, ",")),
                 LogValue(absl::StrJoin(removed, ",")), view.peers.size());
  }
}

MeshStatus MeshAgent::Snapshot() {
  MeshStatus s;
  PeerTableView view;
  bool device_up = false;
  {
    absl::MutexLock l(&mu_);
    view = table_.Compute();
    s.interface_name = device_->name();
    s.tunnel_error = tunnel_error_;
    s.backend = backend_;
    s.adopted = adopted_;
    s.caught_up = caught_up_;
    s.ledger_next_index = table_.next_index();
    s.membership_error = membership_error_;
    s.rejected = table_.rejections();
    device_up = device_up_;
  }
  s.joined = view.self.has_value();
  s.revoked = view.self_revoked;
  if (view.self.has_value()) s.mesh_address = view.self->mesh_address;
  s.forwarding = view.forwarding;
  s.via_hub = view.via_hub;
  s.unreachable = view.unreachable;
  absl::StatusOr<DeviceState> state = device_up ? device_->State() : absl::StatusOr<DeviceState>(DeviceState{});
  if (!state.ok() && s.tunnel_error.empty()) s.tunnel_error = std::string(state.status().message());
  s.tunnel_up = device_up && state.ok() && state->up;
  std::map<std::string, const PeerState*> current;
  if (state.ok()) {
    s.public_key = state->public_key;
    s.listen_port = state->listen_port;
    for (const PeerState& p : state->peers) current[p.public_key] = &p;
  }
  for (const MeshPeer& peer : view.peers) {
    MeshPeerStatus ps;
    ps.node_name = peer.node_name;
    ps.mesh_address = peer.mesh_address;
    ps.public_key = peer.public_key;
    ps.endpoint = peer.endpoint;
    ps.hub = peer.hub;
    auto cur = current.find(peer.public_key);
    if (cur != current.end()) {
      ps.configured = true;
      if (!cur->second->endpoint.empty()) ps.endpoint = cur->second->endpoint;
      ps.latest_handshake = cur->second->latest_handshake;
      ps.rx_bytes = cur->second->rx_bytes;
      ps.tx_bytes = cur->second->tx_bytes;
    }
    s.peers.push_back(std::move(ps));
  }
  return s;
}

}  // namespace ppn::mesh
