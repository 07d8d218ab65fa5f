#pragma once

// FakeDevice: a WireGuard interface in memory, for tests of the mesh agent's logic. Records
// every UpdatePeers call; a test can make Up or UpdatePeers fail, "roam" a peer (change its
// endpoint as WireGuard would on an authenticated packet) or remove the interface behind the
// agent's back. Thread-safe.

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "mesh/device.h"

namespace ppn::mesh::testing {

class FakeDevice final : public Device {
 public:
  explicit FakeDevice(std::string public_key, std::string name = "ppn-wg")
      : name_(std::move(name)), public_key_(std::move(public_key)) {}
  const std::string& name() const override { return name_; }

  absl::StatusOr<UpResult> Up() override {
    absl::MutexLock l(&mu_);
    ++up_calls_;
    if (!up_error_.ok()) return up_error_;
    UpResult r{up_, "wireguard-go"};
    up_ = true;
    return r;
  }
  absl::Status Down() override {
    absl::MutexLock l(&mu_);
    up_ = false;
    peers_.clear();
    return absl::OkStatus();
  }
  absl::Status UpdatePeers(const std::vector<PeerUpdate>& updates) override {
    absl::MutexLock l(&mu_);
    if (!up_) return absl::UnavailableError("interface is down");
    if (!update_error_.ok()) return update_error_;
    calls_.push_back(updates);
    for (const PeerUpdate& u : updates) {
      if (u.remove) {
        peers_.erase(u.peer.public_key);
        continue;
      }
      PeerState& p = peers_[u.peer.public_key];
      p.public_key = u.peer.public_key;
      if (u.set_endpoint && !u.peer.endpoint.empty()) p.endpoint = u.peer.endpoint;
      p.allowed_ips = u.peer.allowed_ips;
      p.persistent_keepalive_seconds = u.peer.persistent_keepalive_seconds;
    }
    return absl::OkStatus();
  }
  absl::Status EnableForwarding() override {
    absl::MutexLock l(&mu_);
    forwarding_ = true;
    return absl::OkStatus();
  }
  absl::StatusOr<DeviceState> State() override {
    absl::MutexLock l(&mu_);
    DeviceState s;
    if (!up_) return s;
    s.up = true;
    s.public_key = public_key_;
    s.listen_port = 51820;
    for (const auto& [key, p] : peers_) s.peers.push_back(p);
    return s;
  }

  // Test controls.
  void SetUpError(absl::Status s) {
    absl::MutexLock l(&mu_);
    up_error_ = std::move(s);
  }
  void SetUpdateError(absl::Status s) {
    absl::MutexLock l(&mu_);
    update_error_ = std::move(s);
  }
  void Roam(const std::string& key, const std::string& endpoint) {
    absl::MutexLock l(&mu_);
    peers_[key].endpoint = endpoint;
  }
  void Vanish() {
    absl::MutexLock l(&mu_);
    up_ = false;
    peers_.clear();
  }
  void AddPeerForTest(PeerState p) {
    absl::MutexLock l(&mu_);
    up_ = true;
    peers_[p.public_key] = std::move(p);
  }
  std::map<std::string, PeerState> peers() {
    absl::MutexLock l(&mu_);
    return peers_;
  }
  std::vector<std::vector<PeerUpdate>> calls() {
    absl::MutexLock l(&mu_);
    return calls_;
  }
  int up_calls() {
    absl::MutexLock l(&mu_);
    return up_calls_;
  }
  bool forwarding() {
    absl::MutexLock l(&mu_);
    return forwarding_;
  }

 private:
  const std::string name_;
  const std::string public_key_;
  absl::Mutex mu_;
  bool up_ ABSL_GUARDED_BY(mu_) = false;
  bool forwarding_ ABSL_GUARDED_BY(mu_) = false;
  int up_calls_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status up_error_ ABSL_GUARDED_BY(mu_);
  absl::Status update_error_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, PeerState> peers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<PeerUpdate>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::mesh::testing
