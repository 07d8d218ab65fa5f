#pragma once

// Placement policy: which node gets a VM. A pure library owned by the fleet, the one placement
// authority: it places new VMs with it, and the scheduler asks the fleet (ExplainPlacement)
// for migration and rebalance targets. Every decision explains itself.
//
// The rule (the seeds' June 2026 scenario): only nodes that are alive, trusted (not revoked),
// not excluded, allowed by a pin, KVM-capable when KVM is required, and with room
// (available memory − memory reserved for creates in flight ≥ the request). Among those,
// prefer KVM, then the most free memory, then the node id (so equal nodes rank the same way
// every time).

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "ppn/types/v1/types.pb.h"

namespace ppn::fleet {

struct NodeView {
  std::string node_id;
  bool alive = false;
  bool revoked = false;
  uint64_t available_mib = 0;  // after the node's safety margin and its running VMs
  uint64_t reserved_mib = 0;   // held by creates in flight
  ppn::types::v1::KvmSupport kvm = ppn::types::v1::KVM_SUPPORT_NONE;
};

struct PlacementRequest {
  uint64_t memory_mib = 0;
  bool require_kvm = false;
  std::string pinned_node_id;  // non-empty: only this node
  std::set<std::string> excluded_node_ids;
};

struct Verdict {
  std::string node_id;
  bool eligible = false;
  std::string reason;
};

struct Decision {
  std::string chosen_node_id;     // empty when no node can take the VM
  std::vector<Verdict> verdicts;  // one per node, the winner first, then by rank
  // "no node can take a VM of N MiB: a: ..., b: ..." when nothing was chosen.
  std::string Explain() const;
};

// Simulated KVM counts as KVM for placement: that is what simulation is for.
bool HasKvm(ppn::types::v1::KvmSupport kvm);

// With `explain` false only the winner's verdict is filled (the hot path: no per-node
// strings); when nothing fits, every node's reason is filled anyway.
Decision Place(const std::vector<NodeView>& nodes, const PlacementRequest& request, bool explain = true);

}  // namespace ppn::fleet
