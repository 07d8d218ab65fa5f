#pragma once

// Reconciler applies what nodes report to the fleet's records, so that after lost answers,
// crashes and migrations the fleet did not see finish, the records say what is true. Pure C++.
// Not thread-safe: FleetCore calls it under its lock, like the Registry it changes.
//
// A node's report counts while the node is ALIVE (a revoked node is never ALIVE, and its
// reports neither make records nor move them). "Live" means reported RUNNING or STARTING and
// not a paused `migrated_out` copy. For a heartbeat of registered node N, each VM v it
// reports (tenant t echoed), by the record of v:
//   R0 on another node, not DESTROYED, owned by t, and N in its left_behind_node_ids (a start
//      with fresh_disk booted v elsewhere while N was gone): N is told to destroy its copy,
//      whatever its state, and the report is dropped before every rule below (it never moves
//      the record, counts as live elsewhere, or keeps v from LOST). Once N has destroyed it, N
//      leaves the list.
//   R1 none: adopted on N with owner t (vm.adopt, reason "unknown to the fleet"); not if t is
//      empty. A migrated_out copy is adopted as MIGRATING.
//   R2 owned by a tenant other than t: the report is ignored (logged); ownership never moves.
//   R3 DESTROYED: N is told to destroy v (vm.destroy who=fleet once it has).
//   R4 PENDING with its create in flight: the create settles it (only its reservation is
//      released once N reports it past PENDING).
//   R5 on N: takes N's state (a migrated_out copy is MIGRATING). A PENDING record settles:
//      vm.create settled_by=heartbeat when N runs it, FAILED if N reports it FAILED; it stays
//      PENDING while N reports it PENDING.
//   R6 on another node Y and N reports v live: if Y's report also shows v live, both run it:
//      logged as an error, nothing moves. Otherwise the record moves to N (vm.adopt from Y,
//      a pin follows it) and, if Y reports a migrated_out copy, Y is told to destroy it.
//   R7 N's copy is migrated_out and the record's node runs v: N is told to destroy its copy.
//   R8 on N and N's copy is migrated_out: if another node runs v, R6 moves it there. If another
//      node reports v MIGRATING (an incoming copy), wait. Otherwise, on the second consecutive
//      heartbeat of N showing only the paused copy, N is told to ResumeVm (then RUNNING,
//      vm.state MIGRATING->RUNNING).
// Each record on N that N does not report:
//   R9  create in flight, or the heartbeat arrived before its create call ended (it may
//       predate the spawn; at start, the load counts as the end): nothing. Another node runs
//       it: moved there (R6). PENDING: FAILED "its node never started it", reservation
//       released.
//   R10 DESTROYED, LOST, FAILED: nothing.
//   R11 otherwise: another node reports it at all: nothing (never LOST while a node reports
//       it); the fleet started less than three intervals ago and some node has not reported
//       yet: wait; else LOST (reservation released).
// Every visible change into or out of UNKNOWN, LOST or FAILED is a vm.state entry.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fleet/lifecycle_log.h"
#include "fleet/registry.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::fleet {

// A call the fleet makes to a node after reconciling, outside its lock.
struct NodeAction {
  enum class Kind { kDestroy, kResume };
  Kind kind = Kind::kDestroy;
  std::string node_id;
  std::string vm_id;
  std::string reason;  // for the log
  // One of each kind per node and VM is queued at a time.
  std::string Key() const { return (kind == Kind::kDestroy ? "destroy/" : "resume/") + node_id + "/" + vm_id; }
};

class Reconciler {
 public:
  // `heartbeat_interval`: the interval asked of nodes (the startup grace is three of them).
  Reconciler(Registry* registry, LifecycleLog* log, absl::Duration heartbeat_interval)
      : registry_(registry), log_(log), interval_(heartbeat_interval) {}

  // The fleet (re)started at `now`: records already PENDING settle on their node's next report.
  void Started(absl::Time now) { started_ = now; }

  // Applies a heartbeat of a registered node: capacity, liveness, catalog and the rules above.
  // Returns the calls to make to nodes.
  std::vector<NodeAction> ApplyHeartbeat(const ppn::host::v1::Heartbeat& heartbeat, absl::Time now);
  // Records the outcome of a NodeAction.
  void ActionDone(const NodeAction& action, const absl::StatusOr<ppn::host::v1::VmInstance>& result);
  // A node just became unreachable: its VMs become UNKNOWN (vm.state for each).
  void NodeUnreachable(const std::string& node_id);

 private:
  void ApplyCapacity(NodeEntry& n, const ppn::host::v1::Heartbeat& hb, absl::Time now);
  void Adopt(const std::string& node_id, const ppn::host::v1::VmInstance& vm, const Reported& report, absl::Time now);
  void OnOwnNode(VmEntry& e, const std::string& node_id, const Reported& report, std::vector<NodeAction>* actions);
  void OnOtherNode(VmEntry& e, const std::string& node_id, const Reported& report, std::vector<NodeAction>* actions);
  void Unreported(VmEntry& e, const std::string& node_id, absl::Time now, std::vector<NodeAction>* actions);
  // Moves the record to `node_id`, which runs it; tells a node with a paused copy to drop it.
  void MoveTo(VmEntry& e, const std::string& node_id, const Reported& report, std::vector<NodeAction>* actions);
  // Another reporting node that runs `e`, or "".
  std::string LiveElsewhere(const VmEntry& e, const std::string& except) const;
  bool InStartupGrace(absl::Time now) const;

  Registry* const registry_;
  LifecycleLog* const log_;
  const absl::Duration interval_;
  absl::Time started_ = absl::InfinitePast();
};

}  // namespace ppn::fleet
