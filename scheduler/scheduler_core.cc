#include "scheduler/scheduler_core.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace ppn::scheduler {
namespace {

// The ledger's limits (ledger/merkle_log.cc) with room to spare for the fixed attributes.
constexpr size_t kMaxAttributes = 60;
constexpr size_t kMaxAttributeBytes = 3800;
constexpr size_t kMaxValueBytes = 240;

std::string Cut(absl::string_view s) { return std::string(s.substr(0, kMaxValueBytes)); }

absl::Status Queue(LedgerPeer* ledger, const ppn::ledger::v1::AppendRequest& entry) {
  absl::Status s = ledger->Append(entry);
  if (!s.ok())
    return absl::InternalError(absl::StrCat("cannot queue ", entry.kind(), " for the ledger: ", s.message()));
  return absl::OkStatus();
}

}  // namespace

ppn::ledger::v1::AppendRequest PlanEntry(const std::string& kind, const std::string& subject,
                                         const std::vector<PlannedMove>& moves,
                                         const std::map<std::string, std::string>& extra) {
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind(kind);
  entry.set_subject(subject);
  entry.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  auto& attributes = *entry.mutable_attributes();
  size_t bytes = 0;
  auto put = [&](const std::string& key, const std::string& value) {
    std::string v = Cut(value);
    if (attributes.size() >= kMaxAttributes || bytes + key.size() + v.size() > kMaxAttributeBytes) return false;
    bytes += key.size() + v.size();
    attributes[key] = std::move(v);
    return true;
  };
  put("moves", absl::StrCat(moves.size()));
  for (const auto& [k, v] : extra) put(k, v);
  size_t i = 0;
  for (; i < moves.size(); ++i) {
    const PlannedMove& m = moves[i];
    std::string target = m.target.empty() ? "(none)" : m.target.value();
    if (!put(absl::StrFormat("move.%03d", i + 1),
             absl::StrCat(m.vm.value(), " ", m.source.value(), ">", target, ": ", m.reason))) {
      break;
    }
  }
  if (i < moves.size()) attributes["omitted"] = absl::StrCat(moves.size() - i);
  return entry;
}

absl::StatusOr<MigrationProgress> SchedulerCore::Migrate(const MigrationRequest& request, const ProgressFn& progress) {
  return migrator_->Migrate(request, progress);
}

bool SchedulerCore::RunMove(const PlannedMove& move, bool to_planned_target, const ProgressFn& progress) {
  MigrationRequest request{move.vm, to_planned_target ? move.target : NodeId(), 0};
  absl::StatusOr<MigrationProgress> r = migrator_->Migrate(request, progress);
  if (r.ok()) return progress(*r);
  // It never started: say so in the stream, as its last report.
  MigrationProgress never;
  never.set_vm_id(move.vm.value());
  never.set_source_node_id(move.source.value());
  never.set_target_node_id(request.target.value());
  never.set_phase(ppn::types::v1::MIGRATION_PHASE_FAILED);
  never.set_message(absl::StrCat("not started: ", r.status().message()));
  spdlog::warn("migration.not_started vm={} code={} error={}", move.vm.value(),
               absl::StatusCodeToString(r.status().code()), LogValue(r.status().message()));
  return progress(never);
}

absl::Status SchedulerCore::Drain(const NodeId& node, bool dry_run, const std::string& by, const DrainPlanFn& on_plan,
                                  const ProgressFn& progress) {
  if (node.empty()) return absl::InvalidArgumentError("node_id is required");
  PPN_ASSIGN_OR_RETURN(std::vector<ppn::fleet::v1::Node> nodes, fleet_->ListNodes());
  if (std::none_of(nodes.begin(), nodes.end(), [&](const auto& n) { return n.node_id() == node.value(); })) {
    return absl::NotFoundError(absl::StrCat("unknown node ", node.value()));
  }
  if (!dry_run) {
    // Cordoned before anything is planned: nothing new lands there while its VMs leave, and a
    // drain that stops half-way leaves a node no VM moves back to.
    PPN_RETURN_IF_ERROR(fleet_->CordonNode(node, absl::StrCat("drained by ", by.substr(0, 180))).status());
  }
  PPN_ASSIGN_OR_RETURN(std::vector<ppn::fleet::v1::VmRecord> vms, fleet_->ListVms(node));
  DrainPlan plan = PlanDrain(node, vms, fleet_);
  if (!dry_run) {
    std::vector<std::string> pinned;
    for (const VmId& v : plan.pinned) pinned.push_back(v.value());
    PPN_RETURN_IF_ERROR(Queue(ledger_, PlanEntry("scheduler.drain", node.value(), plan.moves,
                                                 {{"pinned", absl::StrJoin(pinned, ",")}, {"by", by}})));
  }
  spdlog::info("scheduler.drain node={} moves={} pinned={} dry_run={}", node.value(), plan.moves.size(),
               plan.pinned.size(), dry_run);
  if (!on_plan(plan) || dry_run) return absl::OkStatus();
  for (const PlannedMove& move : plan.moves) {
    // Placement decides again for each move: the ones before it changed what is free.
    if (!RunMove(move, /*to_planned_target=*/false, progress)) break;
  }
  return absl::OkStatus();
}

absl::Status SchedulerCore::Rebalance(bool dry_run, const std::string& by, const RebalancePlanFn& on_plan,
                                      const ProgressFn& progress) {
  PPN_ASSIGN_OR_RETURN(std::vector<ppn::fleet::v1::Node> nodes, fleet_->ListNodes());
  PPN_ASSIGN_OR_RETURN(std::vector<ppn::fleet::v1::VmRecord> vms, fleet_->ListVms(NodeId()));
  RebalancePlan plan = PlanRebalance(nodes, vms, fleet_);
  if (!dry_run) {
    std::map<std::string, std::string> extra{{"by", by}};
    for (size_t i = 0; i < plan.notes.size(); ++i) extra[absl::StrFormat("note.%03d", i + 1)] = plan.notes[i];
    PPN_RETURN_IF_ERROR(Queue(ledger_, PlanEntry("scheduler.rebalance", "fleet", plan.moves, extra)));
  }
  spdlog::info("scheduler.rebalance moves={} notes={} dry_run={}", plan.moves.size(), plan.notes.size(), dry_run);
  if (!on_plan(plan) || dry_run) return absl::OkStatus();
  for (const PlannedMove& move : plan.moves) {
    if (!RunMove(move, /*to_planned_target=*/true, progress)) break;
  }
  return absl::OkStatus();
}

void SchedulerCore::AppendPinEntry(const char* kind, const ppn::fleet::v1::VmRecord& vm, const std::string& by) {
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind(kind);
  entry.set_tenant_id(vm.tenant_id());
  entry.set_subject(vm.vm_id());
  entry.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  (*entry.mutable_attributes())["node"] = vm.node_id();
  (*entry.mutable_attributes())["by"] = Cut(by);
  absl::Status s = ledger_->Append(entry);
  // The fleet has the pin already; a spool that cannot be written is the operator's to fix.
  if (!s.ok()) spdlog::error("{}.not_in_ledger vm={} error={}", kind, vm.vm_id(), LogValue(s.message()));
}

absl::StatusOr<NodeId> SchedulerCore::Pin(const VmId& vm, const NodeId& node, const std::string& by) {
  if (node.empty()) return absl::InvalidArgumentError("node_id is required");
  PPN_ASSIGN_OR_RETURN(ppn::fleet::v1::VmRecord pinned, fleet_->SetPin(vm, node));
  AppendPinEntry("vm.pin", pinned, by);
  spdlog::info("vm.pinned vm={} node={}", vm.value(), node.value());
  return NodeId(pinned.pinned_node_id());
}

absl::Status SchedulerCore::Unpin(const VmId& vm, const std::string& by) {
  PPN_ASSIGN_OR_RETURN(ppn::fleet::v1::VmRecord unpinned, fleet_->SetPin(vm, NodeId()));
  AppendPinEntry("vm.unpin", unpinned, by);
  spdlog::info("vm.unpinned vm={}", vm.value());
  return absl::OkStatus();
}

}  // namespace ppn::scheduler
