#pragma once

// Drain and rebalance plans, pure: from a snapshot of the fleet's nodes and VMs, and the
// fleet's placement policy asked through a PlacementOracle for every target. The planner only
// says which VMs should move and why (a node to empty, a memory gap to narrow); where each one
// goes is placement's answer, so KVM preference and reservations apply exactly as for a new
// VM. Every move carries its reason; a question placement could not answer is reported in the
// plan, never dropped.

#include <string>
#include <vector>

#include "common/ids.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "scheduler/peers.h"

namespace ppn::scheduler {

struct PlannedMove {
  VmId vm;
  NodeId source;
  NodeId target;  // empty: placement found no node (the reason says why)
  std::string reason;
};

struct DrainPlan {
  NodeId node;
  std::vector<PlannedMove> moves;  // every unpinned VM on the node, in id order
  std::vector<VmId> pinned;        // VMs that stay
};

struct RebalancePlan {
  std::vector<PlannedMove> moves;
  // Candidates placement would not place, and a placement question that failed.
  std::vector<std::string> notes;
};

// Plans emptying `node`, whose VMs the fleet lists as `vms`: pinned ones stay; each other one
// gets placement's target with `node` excluded, or an empty target and the reason (not
// running, no node has room, placement could not be asked).
DrainPlan PlanDrain(const NodeId& node, const std::vector<ppn::fleet::v1::VmRecord>& vms, PlacementOracle* oracle);

// Plans evening out free memory across the alive nodes: while the fullest node holds an
// unpinned running VM whose move narrows the gap to some node, asks placement where it goes,
// leaving out the source and every node the move would not even out with; at most one move
// per VM and `max_moves` in all. Free memory is what the node has less what creates in
// flight hold, updated by the moves already planned.
RebalancePlan PlanRebalance(const std::vector<ppn::fleet::v1::Node>& nodes,
                            const std::vector<ppn::fleet::v1::VmRecord>& vms, PlacementOracle* oracle,
                            int max_moves = 10);

// "a: reason; b: reason" for a decision's verdicts.
std::string Verdicts(const ppn::fleet::v1::PlacementDecision& decision);

}  // namespace ppn::scheduler
