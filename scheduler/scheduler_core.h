#pragma once

// SchedulerCore: the scheduler's operations as typed calls — one migration, a drain, a
// rebalance, pins. Drain and rebalance take a snapshot from the fleet, plan (planner.h),
// append the plan with its reasons to the ledger, then hand each move to the Migrator one at a
// time; every planned move ends with a final report, also the ones that never started. Pins
// go to the fleet and the ledger (`vm.pin`, `vm.unpin`). Stateless beyond its peers;
// thread-safe. `*fleet`, `*ledger` and `*migrator` must outlive it.

#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/ids.h"
#include "scheduler/migrator.h"
#include "scheduler/peers.h"
#include "scheduler/planner.h"

namespace ppn::scheduler {

class SchedulerCore {
 public:
  // Receives the plan before anything moves; returns false to stop there.
  using DrainPlanFn = std::function<bool(const DrainPlan&)>;
  using RebalancePlanFn = std::function<bool(const RebalancePlan&)>;

  SchedulerCore(FleetPeer* fleet, LedgerPeer* ledger, Migrator* migrator)
      : fleet_(fleet), ledger_(ledger), migrator_(migrator) {}

  // See Migrator::Migrate.
  absl::StatusOr<MigrationProgress> Migrate(const MigrationRequest& request, const ProgressFn& progress);

  // Empties `node`: unless `dry_run` it cordons it in the fleet first (the fleet's error stops
  // the drain before anything moves; `ppnctl node uncordon` lifts it), `on_plan` gets the plan
  // (the pinned VMs that stay included), then (unless `dry_run`) each move runs with the
  // target placement chooses at that moment, reporting to `progress`, its last report
  // COMPLETED or FAILED. INVALID_ARGUMENT for an empty node, NOT_FOUND for an unknown one,
  // the fleet's error if it cannot be read, INTERNAL if the plan cannot be queued for the
  // ledger (then nothing moves). `by` names the caller in the ledger.
  absl::Status Drain(const NodeId& node, bool dry_run, const std::string& by, const DrainPlanFn& on_plan,
                     const ProgressFn& progress);
  // The same for a rebalance plan, each move to its planned target.
  absl::Status Rebalance(bool dry_run, const std::string& by, const RebalancePlanFn& on_plan,
                         const ProgressFn& progress);

  // Pins `vm` to `node`, the node it runs on; returns that node. INVALID_ARGUMENT without a
  // node; the fleet's NOT_FOUND or FAILED_PRECONDITION.
  absl::StatusOr<NodeId> Pin(const VmId& vm, const NodeId& node, const std::string& by);
  absl::Status Unpin(const VmId& vm, const std::string& by);

 private:
  // Runs `move` and reports its end to `progress`; false once the caller has gone.
  bool RunMove(const PlannedMove& move, bool to_planned_target, const ProgressFn& progress);
  void AppendPinEntry(const char* kind, const ppn::fleet::v1::VmRecord& vm, const std::string& by);

  FleetPeer* const fleet_;
  LedgerPeer* const ledger_;
  Migrator* const migrator_;
};

// The ledger entry of a plan (`scheduler.drain` or `scheduler.rebalance`): `extra`
// attributes, then one per move ("move.001" = "vm-1 laptop-a>laptop-b: reason"), within the
// ledger's 64 attributes and 4 KiB; moves that do not fit are counted in "omitted".
ppn::ledger::v1::AppendRequest PlanEntry(const std::string& kind, const std::string& subject,
                                         const std::vector<PlannedMove>& moves,
                                         const std::map<std::string, std::string>& extra);

}  // namespace ppn::scheduler
