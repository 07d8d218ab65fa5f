#pragma once

// Device is the node's WireGuard interface as the mesh agent drives it: bring it up, change
// its peers, read its state. WireGuardDevice (wireguard_device.h) is the implementation over
// `ip` and `wg`; tests of the agent's logic use testing/fake_device.h. Implementations are
// thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ppn::mesh {

// One peer as it should be configured.
struct PeerConfig {
  std::string public_key;
  std::string endpoint;                  // host:port; "" leaves the endpoint to the peer's first packet
  std::vector<std::string> allowed_ips;  // CIDRs; replaces the peer's list
  int persistent_keepalive_seconds = 0;  // 0: off
};

// One change of the peer set.
struct PeerUpdate {
  PeerConfig peer;
  bool remove = false;       // remove the peer (only public_key is read)
  bool set_endpoint = true;  // false keeps the endpoint the device has (a peer that roamed)
};

// One peer as the interface reports it.
struct PeerState {
  std::string public_key;
  std::string endpoint;  // where WireGuard last heard from it, or its configured one; "" none
  std::vector<std::string> allowed_ips;
  absl::Time latest_handshake = absl::InfinitePast();  // InfinitePast: never
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  int persistent_keepalive_seconds = 0;
};

struct DeviceState {
  bool up = false;         // the link exists, is administratively up and WireGuard answers
  std::string public_key;  // the interface's own
  uint16_t listen_port = 0;
  std::vector<PeerState> peers;
};

// What Up did.
struct UpResult {
  bool adopted = false;  // an interface left by a previous run was kept as it was
  std::string backend;   // "kernel" or "wireguard-go"
};

class Device {
 public:
  virtual ~Device() = default;
  // The interface's name, e.g. "ppn-wg".
  virtual const std::string& name() const = 0;
  // Brings the interface up, idempotently; see WireGuardDevice::Up for the contract.
  virtual absl::StatusOr<UpResult> Up() = 0;
  // Removes the interface; OK if it is not there.
  virtual absl::Status Down() = 0;
  // Applies the changes in one step. INVALID_ARGUMENT for a malformed key, endpoint or CIDR
  // (then nothing changed); UNAVAILABLE if the interface is not up.
  virtual absl::Status UpdatePeers(const std::vector<PeerUpdate>& updates) = 0;
  // Lets the node forward packets that arrive on the interface (the hub). Never turns
  // forwarding off, so nothing else on the node that forwards is disturbed.
  virtual absl::Status EnableForwarding() = 0;
  // The interface's state; `up` false (and no error) when it is not there.
  virtual absl::StatusOr<DeviceState> State() = 0;
};

}  // namespace ppn::mesh
