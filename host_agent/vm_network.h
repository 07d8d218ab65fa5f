#pragma once

// VmNetwork gives every VM a network of its own on this node: a network namespace holding the
// VM's QEMU (user-mode networking confined to the namespace, so any image gets DHCP and DNS
// and the guest reaches nothing the namespace cannot), a veth pair to the node, and nftables
// rules of its own that decide what the guest may reach. On the node, one table per agent
// NATs the namespaces' egress, forwards each VM's host ports into its namespace (and only
// there), and drops whatever a namespace sends to the node itself or to another namespace.
//
// Default policy: the guest reaches the internet where the node has it, and nothing of the
// node or the pool — not the node's addresses or loopback, not the mesh (10.8.0.0/24), not
// link-local (169.254.0.0/16), not the node's LAN ranges, not any other VM. A tenant's policy
// (internet on or off, allow and deny lists of CIDR and port ranges, a rate limit) narrows it.
//
// Making a VM's network starts no process: the namespace is bound under /run/netns as `ip
// netns add` does, the veth pair made by netlink, both ends' addresses and routes set by
// ioctls, and nftables scripts applied through libnftables in-process (the same scripts `nft
// -f` would read, which the injected CommandRunner runs when the library is missing); process
// starts were most of its setup time. Removal and the private networks go through `ip -batch`
// files run by the CommandRunner. Root needed. Rendering is pure and unit-tested. Thread-safe (one mutex around the
// node table); per-VM calls for different VMs may run concurrently.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/command_runner.h"
#include "host_agent/private_network.h"

namespace ppn::host {

using ppn::CommandRunner;

// One rule of an egress list: a destination network and, optionally, a port range.
struct EgressRule {
  std::string cidr;         // "203.0.113.0/24" or a single address
  uint32_t port_first = 0;  // 0: every port
  uint32_t port_last = 0;
  bool udp = false;  // the ports are UDP ports (TCP otherwise); ignored without ports
};

// What a guest may reach beyond the default denials.
struct EgressPolicy {
  bool internet = true;           // false: nothing outside, except `allow`
  std::vector<EgressRule> allow;  // reachable even without internet
  std::vector<EgressRule> deny;   // never reachable
  uint64_t rate_limit_kbit = 0;   // egress cap in kbit/s; 0: none
};

// The node-side facts every VM's rules depend on.
struct NetworkOptions {
  std::string node_id;
  // What this agent's names (namespaces ppn.<scope>.<vm>, its nftables table, its link claims)
  // are made of; two agents on one host must differ in it. NetworkScope() makes one from the
  // node id and state directory; empty means the node id.
  std::string scope;
  std::string mesh_address;  // where forwarded ports listen
  // One /30 per VM out of this pool, shared by every agent on the host: an index is claimed by
  // creating claims_dir/<index> (holding "<node> <vm>"), so agents never collide.
  std::string link_range = "10.213.0.0/16";
  std::string claims_dir = "/run/ppn/links";
  std::vector<std::string> node_addresses;  // every address of the node (found at start)
  std::vector<std::string> lan_ranges;      // the node's LAN subnets and the operator's extra ranges
  std::vector<std::string> dns_servers;     // resolvers the guests' DNS goes to (slirp forwards)
  std::string mesh_range = "10.8.0.0/24";
  // The fleet's pool of private tenant networks (--private_network_pool): never reached
  // through a VM's egress, only over its NIC on a network (PrivateNetworks).
  std::string private_range = "10.214.0.0/16";
};

// Where one VM's network is.
struct VmLink {
  uint32_t index = 0;    // the VM's /30 within link_range
  std::string netns;     // ppn.<node>.<vm> (ids hold no dots, so one node's names never match another's)
  std::string host_if;   // the node's end of the veth pair
  std::string host_ip;   // the node's address on the link
  std::string netns_ip;  // the namespace's address: QEMU's forwarded ports listen here
};

// A forwarded host port: node mesh_address:host_port reaches the namespace's netns_ip:host_port,
// where QEMU forwards it to the guest.
struct PortForwardRule {
  uint32_t host_port = 0;
  bool udp = false;
};

// Traffic of one VM's link, from the node's end of the veth pair.
struct LinkCounters {
  uint64_t tx_bytes = 0;  // from the guest
  uint64_t rx_bytes = 0;  // to the guest
  uint64_t tx_packets = 0;
  uint64_t rx_packets = 0;
};

class VmNetwork {
 public:
  VmNetwork(NetworkOptions options, CommandRunner run);

  // The link of VM `vm_id` at `index` (names and addresses only; nothing is made).
  // INVALID_ARGUMENT when the index does not fit link_range.
  absl::StatusOr<VmLink> LinkFor(const std::string& vm_id, uint32_t index) const;
  // How many /30 links link_range holds.
  uint32_t Capacity() const;

  // The link of `vm_id`: its claimed index if it has one, else the lowest free index, claimed
  // now. RESOURCE_EXHAUSTED when the pool is full.
  absl::StatusOr<VmLink> Acquire(const std::string& vm_id);
  // Gives the link's index back to the pool.
  void Release(const VmLink& link);

  // Node setup at agent start: forwarding and route_localnet, this agent's nftables table with
  // the forwards of `live` VMs (by VM id), and removal of every namespace, veth and claim of
  // this node that belongs to no VM in `live` (left by a crash). Returns the live VMs' links;
  // `removed` gets the names it removed.
  absl::StatusOr<std::map<std::string, VmLink>> StartNode(
      const std::map<std::string, std::vector<PortForwardRule>>& live, std::vector<std::string>* removed = nullptr);

  // Makes the namespace, the veth pair and the namespace's rules for `policy`. Undoes itself
  // on error. ALREADY_EXISTS never: a leftover namespace of the same name is replaced.
  absl::Status Create(const VmLink& link, const EgressPolicy& policy);
  // Points `forwards` of the node's mesh address into the VM's namespace.
  absl::Status AddForwards(const VmLink& link, const std::vector<PortForwardRule>& forwards);
  // Replaces the namespace's rules (live; new connections follow the new policy).
  absl::Status ApplyPolicy(const VmLink& link, const EgressPolicy& policy);
  // Removes forwards, veth pair and namespace; what is already gone is not an error.
  absl::Status Remove(const VmLink& link, const std::vector<PortForwardRule>& forwards);

  // Traffic so far; zeros when the link is gone.
  LinkCounters Counters(const VmLink& link) const;

  // The namespaces of this node that exist now (for tests and reconciliation).
  std::vector<std::string> ListNamespaces() const;

  const NetworkOptions& options() const { return options_; }
  // The node's private tenant networks (same scope): VMs' second NICs live in their namespaces.
  PrivateNetworks& private_networks() { return private_; }

  // Pure renderings, public for tests.
  std::string RenderNodeTable(const std::vector<std::pair<VmLink, std::vector<PortForwardRule>>>& live) const;
  std::string RenderVmRules(const EgressPolicy& policy) const;
  std::string NodeTableName() const;
  std::string NamespacePrefix() const;
  std::string Scope() const;
  std::string VmIdOf(const VmLink& link) const;

 private:
  absl::Status RunBatch(const std::vector<std::string>& argv_prefix, const std::string& name,
                        const std::string& content, const std::string& netns);
  // This node's claims: VM id → index.
  std::map<std::string, uint32_t> Claims() const;

  const NetworkOptions options_;
  const CommandRunner run_;
  uint32_t base_ = 0;  // link_range's network address, host order
  int prefix_ = 16;
  mutable absl::Mutex table_mu_;  // the node table's maps
  PrivateNetworks private_;
};

// Validates `policy` (CIDRs parse, ports 1-65535 and first <= last, at most 64 rules per list,
// a rate limit below 10 Gbit/s); INVALID_ARGUMENT naming the field.
absl::Status ValidateEgressPolicy(const EgressPolicy& policy);

// "<node>-<4 hex digits of the state directory's hash>": the scope of the agent of `node_id`
// that keeps its state in `state_dir` (a test's agent and a local mesh's laptop-a never meet).
std::string NetworkScope(const std::string& node_id, const std::string& state_dir);

// Removes whatever the agent of `scope` made on this host (namespaces, veths, link claims, its
// nftables table), for tests that kill their agents. Errors are ignored.
void RemoveNetworkScope(const std::string& scope, const CommandRunner& run,
                        const std::string& claims_dir = "/run/ppn/links");

// The options of this node as it is now: its addresses and connected subnets (`ip -j addr`)
// plus `extra_lan_ranges`, the reachable resolvers of /etc/resolv.conf, and the given ids.
// INVALID_ARGUMENT naming a bad extra range; FAILED_PRECONDITION if `ip` does not run.
absl::StatusOr<NetworkOptions> DiscoverNetworkOptions(const std::string& node_id, const std::string& mesh_address,
                                                      const std::vector<std::string>& extra_lan_ranges,
                                                      const CommandRunner& run);

// The node's addresses and connected subnets, from `ip -j addr` output (pure, for tests).
void ParseNodeAddresses(const std::string& ip_json, std::vector<std::string>* addresses,
                        std::vector<std::string>* subnets);

// The nameservers of a resolv.conf text that a namespace can reach (not loopback).
std::vector<std::string> ParseNameservers(const std::string& resolv_conf);

}  // namespace ppn::host
