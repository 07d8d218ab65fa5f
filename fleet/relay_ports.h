#pragma once

// The relay's ports as the fleet hands them out: each forwarded port of each VM gets a port of
// the relay's range (--relay_ports) when the VM is created, keeps it wherever the VM runs and
// gives it back when the VM is destroyed. Pure C++.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::fleet {

// One forwarded port of a VM and the relay port that stands for it.
struct RelayPort {
  ppn::types::v1::Protocol protocol = ppn::types::v1::PROTOCOL_TCP;  // TCP or UDP, never unspecified
  uint32_t guest_port = 0;
  uint32_t public_port = 0;
  bool operator==(const RelayPort& o) const {
    return protocol == o.protocol && guest_port == o.guest_port && public_port == o.public_port;
  }
};

// TCP for an unspecified protocol (a PortForward's default); anything else as is.
ppn::types::v1::Protocol EffectiveProtocol(ppn::types::v1::Protocol protocol);

// "tcp/80=30000,udp/53=30001": how a VM's relay ports are stored.
std::string FormatRelayPorts(const std::vector<RelayPort>& ports);
// The inverse; INVALID_ARGUMENT naming the bad part.
absl::StatusOr<std::vector<RelayPort>> ParseRelayPorts(absl::string_view text);
// "FIRST-LAST", 1 <= FIRST <= LAST <= 65535; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::pair<uint32_t, uint32_t>> ParsePortRange(absl::string_view text);

// RelayPortPool says which port of the range each VM holds. A freed port is handed out again
// only after every other free port has been (allocation walks on from the last port handed
// out), so a tenant's stale address reaches another VM as late as possible. Disabled (no range)
// until Configure. Not thread-safe: the Registry's lock covers it.
class RelayPortPool {
 public:
  void Configure(uint32_t first, uint32_t last);
  bool enabled() const { return first_ != 0; }
  uint32_t first() const { return first_; }
  uint32_t last() const { return last_; }

  // Gives `port` to `vm_id`: true if it is in the range and free, or already that VM's.
  bool Claim(uint32_t port, const std::string& vm_id);
  // A free port for `vm_id`, or nullopt when every port of the range is held.
  std::optional<uint32_t> Allocate(const std::string& vm_id);
  // Frees every port `vm_id` holds except those in `keep`.
  void ReleaseExcept(const std::string& vm_id, const std::set<uint32_t>& keep);
  // Allocation continues after `port` (after a restart: the newest VM's port).
  void ContinueAfter(uint32_t port) { cursor_ = port; }
  // Ports nobody holds.
  size_t available() const;

 private:
  uint32_t first_ = 0;
  uint32_t last_ = 0;
  uint32_t cursor_ = 0;                              // the last port handed out
  std::map<uint32_t, std::string> owner_;            // port -> vm_id
  std::map<std::string, std::set<uint32_t>> by_vm_;  // vm_id -> its ports
};

}  // namespace ppn::fleet
