#pragma once

// PrivateNetworks puts VMs of one tenant on a private network of theirs (a /24 the fleet
// hands out) on this node. Per network that has a VM here: a router namespace
// `ppn.<scope>.net.<network id>` holding a Linux bridge. Per attached VM and network: inside
// the VM's own namespace a tap device for QEMU's second NIC, joined by a bridge of its own to
// one end of a veth pair whose other end is a port of the router's bridge. Nothing in the VM's
// namespace has an address on that path, so nothing routes between the private network and
// the VM's egress (user-mode networking on eth0); the router namespace has no address, no
// route and no other interface, so the network reaches nothing and nothing reaches it.
// Another tenant's VM has no port on the bridge: it cannot reach, or even see, the network.
//
// The guest configures its address from the seed's network-config (RenderNetworkConfig).
// Routers are shared by the VMs of a network on this node; Detach removes a router with its
// last VM, Sweep removes what a crash left. Changes go through `ip` run by the injected
// CommandRunner (root needed). Thread-safe (one mutex around every change).

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/command_runner.h"

namespace ppn::host {

// One NIC of a VM on a private network.
struct PrivateNic {
  std::string network_id;  // [a-z0-9-], at most 40 characters
  std::string address;     // the VM's address on it, e.g. "10.214.3.2"
  uint32_t prefix_length = 24;
  std::string mac;  // empty: MacFor(vm, network)
};

// At most this many private NICs per VM.
constexpr size_t kMaxPrivateNics = 4;

class PrivateNetworks {
 public:
  // `scope`: as VmNetwork's (names of two agents on one host never meet).
  PrivateNetworks(std::string scope, CommandRunner run);

  // Makes the router of each NIC's network (if this node has none yet) and the VM's tap,
  // bridge and veth for it inside `vm_netns` (which must exist); the taps belong to
  // `tap_user` (QEMU's user; empty: root). Undoes itself on error.
  absl::Status Attach(const std::string& vm_id, const std::string& vm_netns, const std::vector<PrivateNic>& nics,
                      const std::string& tap_user);
  // Takes the VM's ports off the routers of `nics` and removes each router left without a VM;
  // what is already gone is not an error. (The VM's tap and bridge go with its namespace.)
  void Detach(const std::string& vm_id, const std::vector<PrivateNic>& nics);
  // Agent start: removes every router of this scope whose network has no VM in `live`
  // (network id → VM ids), and ports of routers that belong to no live VM. Returns the
  // names removed.
  std::vector<std::string> Sweep(const std::map<std::string, std::set<std::string>>& live);

  // The routers of this scope that exist now.
  std::vector<std::string> ListRouters() const;
  // The VM ports of a router now (veth ends on its bridge).
  std::vector<std::string> RouterPorts(const std::string& network_id) const;

  std::string RouterNamespace(const std::string& network_id) const;
  // The router's end of the veth of `vm_id` on `network_id` (11 characters).
  std::string RouterPort(const std::string& vm_id, const std::string& network_id) const;
  // The tap of the VM's NIC `index` (in the VM's namespace, where names are the VM's own).
  static std::string TapName(size_t index);
  // A stable, locally administered MAC for the VM's NIC on the network: a migrated VM keeps it.
  static std::string MacFor(const std::string& vm_id, const std::string& network_id);

 private:
  absl::Status RunBatch(const std::string& netns, const std::string& name, const std::string& content);
  absl::Status MakeRouterLocked(const std::string& network_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveRouterIfIdleLocked(const std::string& network_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string scope_;
  const CommandRunner run_;
  absl::Mutex mu_;
};

// Validates NICs from a spawn request: network ids, IPv4 addresses with prefix 8-30, MACs
// (unicast, "xx:xx:xx:xx:xx:xx"), no network twice, at most kMaxPrivateNics. INVALID_ARGUMENT.
absl::Status ValidatePrivateNics(const std::vector<PrivateNic>& nics);

// The NoCloud network-config (cloud-init version 2) for a VM with `nics`: its first NIC (QEMU's
// default MAC 52:54:00:12:34:56, user-mode networking) on DHCP, each private NIC matched by MAC
// with its static address. Empty when there are no private NICs (cloud-init's fallback then).
std::string RenderNetworkConfig(const std::vector<PrivateNic>& nics);

// Removes every router of `scope` on this host (RemoveNetworkScope's part). Errors are ignored.
void RemovePrivateNetworkScope(const std::string& scope, const CommandRunner& run);

}  // namespace ppn::host
