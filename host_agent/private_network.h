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
// Guests' ARP caches across changes: a router answers ARP for the network's VMs on other nodes
// (proxy ARP) with its bridge's MAC, which is the same on every node (RouterMac), so what a
// guest learned about a remote peer stays right wherever either of them moves. What can go
// stale is a guest's entry for a peer that was on its bridge and is no longer (the peer moved
// away, or the guest did): the router then announces the peer's address with its own MAC
// (gratuitous ARP) — SetPeers for addresses newly behind the tunnel, Activate for every remote
// address when a migrated VM starts running here — so traffic resumes at once instead of after
// the guest's neighbour entry times out (about 50 s).
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

// How a router reaches the routers of its network on other nodes: a WireGuard interface of
// its own (wireguard-go, run inside the router namespace so its UDP socket is there; moving a
// wireguard-go interface between namespaces makes it exit) and an uplink veth to the node
// whose rules pass only that interface's UDP port.
struct TunnelOptions {
  std::string keys_dir;  // one private key per network (0600); made here, never leaves the node
  // A /30 per router with a tunnel out of 10.215.0.0/16, claimed in /run/ppn/uplinks/<index>
  // ("<scope> <network>") so every agent on the host gets its own; the tunnel of index i
  // listens on first_port + i.
  uint16_t first_port = 52000;
  std::string wireguard_go = "wireguard-go";
  // Where other nodes' tunnels send to: on a loopback mesh (every agent on this machine) the
  // uplink's own address; otherwise this address, whose tunnel ports the node forwards to the
  // routers (a table `ip ppnt_<scope>` of its own) while it masquerades their uplinks.
  std::string mesh_address = "127.0.0.1";
};

// This node's end of a network's tunnel, for the control plane to hand to the other nodes.
struct NetworkTunnel {
  std::string network_id;
  std::string interface_name;
  std::string public_key;
  std::string endpoint;  // "ADDRESS:PORT"
};

// Another node's end, and the addresses of the network's VMs there.
struct NetworkPeer {
  std::string public_key;
  std::string endpoint;
  std::vector<std::string> addresses;  // "10.214.3.7" each
};

class PrivateNetworks {
 public:
  // `scope`: as VmNetwork's (names of two agents on one host never meet).
  PrivateNetworks(std::string scope, CommandRunner run);

  // Makes the router of each NIC's network (if this node has none yet) and the VM's tap,
  // bridge and veth for it inside `vm_netns` (which must exist); the taps belong to
  // `tap_user` (QEMU's user; empty: root). Undoes itself on error.
  absl::Status Attach(const std::string& vm_id, const std::string& vm_netns, const std::vector<PrivateNic>& nics,
                      const std::string& tap_user);
  // A VM that arrived here by live migration runs now: for each NIC's network the router
  // announces every other address it routes through the tunnel, whose entries in the guest's
  // ARP cache may still point at a VM's MAC on the node it left. Networks without a router
  // here are skipped; sending errors are ignored (the entries time out by themselves).
  void Activate(const std::vector<PrivateNic>& nics);
  // Takes the VM's ports off the routers of `nics` and removes each router left without a VM;
  // what is already gone is not an error. (The VM's tap and bridge go with its namespace.)
  void Detach(const std::string& vm_id, const std::vector<PrivateNic>& nics);
  // Agent start: removes every router of this scope whose network has no VM in `live`
  // (network id → VM ids), and ports of routers that belong to no live VM. Returns the
  // names removed.
  std::vector<std::string> Sweep(const std::map<std::string, std::set<std::string>>& live);

  // Gives the router of `network_id` (which must exist: a VM of it runs here) its tunnel, or
  // returns the one it has. `cidr` is the network's /24. FAILED_PRECONDITION when the router
  // does not exist or wireguard-go cannot run.
  absl::StatusOr<NetworkTunnel> Tunnel(const std::string& network_id, const std::string& cidr,
                                       const TunnelOptions& options);
  // Replaces the tunnel's peers with `peers` and routes each of their addresses through it;
  // an address that was not routed through it before is announced on the bridge (it was on
  // this node, or nowhere). INVALID_ARGUMENT for a bad key, endpoint or address; FAILED_PRECONDITION without a tunnel.
  // `fingerprint` is remembered once applied (Tunnels()).
  absl::Status SetPeers(const std::string& network_id, const std::vector<NetworkPeer>& peers,
                        const std::string& fingerprint = "");
  // The tunnels made by this object (or taken over by Tunnel() after a restart), each with the
  // fingerprint of the peers last applied ("" before any).
  std::vector<std::pair<NetworkTunnel, std::string>> Tunnels();
  // The tunnel interface of `network_id` on this host (15 characters at most, unique per
  // host: wireguard-go's control sockets are shared by every namespace).
  std::string TunnelInterface(const std::string& network_id) const;

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
  // The MAC of the network's router bridge: the same on every node (no two routers of a
  // network share a link, so they never meet), so a guest's proxy-ARP entries survive moves.
  static std::string RouterMac(const std::string& network_id);

 private:
  absl::Status RunBatch(const std::string& netns, const std::string& name, const std::string& content);
  // The addresses routed through the network's tunnel now (empty without one).
  std::vector<std::string> TunnelRoutesLocked(const std::string& network_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MakeRouterLocked(const std::string& network_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveRouterIfIdleLocked(const std::string& network_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops the router's tunnel (wireguard-go holds the namespace alive otherwise), deletes the
  // namespace and releases its uplink claim.
  void RemoveRouterLocked(const std::string& network_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Replaces the node's forwards of this scope's tunnel ports (from its uplink claims).
  absl::Status ApplyForwardsLocked(const TunnelOptions& options) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string scope_;
  const CommandRunner run_;
  struct TunnelState {
    TunnelOptions options;
    NetworkTunnel tunnel;
    std::string fingerprint;
  };
  std::map<std::string, TunnelState> tunnels_ ABSL_GUARDED_BY(mu_);  // by network

  absl::Mutex mu_;
};

// Validates NICs from a spawn request: network ids, IPv4 addresses with prefix 8-30, MACs
// (unicast, "xx:xx:xx:xx:xx:xx"), no network twice, at most kMaxPrivateNics. INVALID_ARGUMENT.
absl::Status ValidatePrivateNics(const std::vector<PrivateNic>& nics);

// The NoCloud network-config (cloud-init version 2) for a VM with `nics`: its first NIC (QEMU's
// default MAC 52:54:00:12:34:56, user-mode networking) on DHCP, each private NIC matched by MAC
// with its static address. Empty when there are no private NICs (cloud-init's fallback then).
std::string RenderNetworkConfig(const std::vector<PrivateNic>& nics);

// The gratuitous ARP request (an Ethernet frame, padded to 60 bytes) announcing `address` at
// `mac` to the whole link; empty for a bad MAC or address.
std::string GratuitousArpFrame(const std::string& mac, const std::string& address);

// Sends GratuitousArpFrame(mac, a) for each of `addresses` out of `interface_name` in network
// namespace `netns` (/run/netns/<netns>; empty: this one), `rounds` times 100 ms apart (a
// guest busy at the first one still hears the next). Root needed.
absl::Status AnnounceAddresses(const std::string& netns, const std::string& interface_name, const std::string& mac,
                               const std::vector<std::string>& addresses, int rounds = 2);

// "10.214.3.0/24" for ("10.214.3.7", 24); "" for a bad address.
std::string NetworkCidr(const std::string& address, uint32_t prefix_length);

// Removes every router of `scope` on this host, with its tunnel and uplink claim
// (RemoveNetworkScope's part). Errors are ignored.
void RemovePrivateNetworkScope(const std::string& scope, const CommandRunner& run);

}  // namespace ppn::host
