#include "scheduler/planner.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"

namespace ppn::scheduler {
namespace {

using ppn::fleet::v1::VmRecord;

bool Movable(const VmRecord& vm) {
  return vm.pinned_node_id().empty() && vm.state() == ppn::types::v1::VM_STATE_RUNNING;
}

std::string ChosenReason(const ppn::fleet::v1::PlacementDecision& d) {
  for (const auto& v : d.verdicts()) {
    if (v.node_id() == d.chosen_node_id()) return v.reason();
  }
  return "";
}

}  // namespace

std::string Verdicts(const ppn::fleet::v1::PlacementDecision& decision) {
  std::string out;
  for (const auto& v : decision.verdicts())
    absl::StrAppend(&out, out.empty() ? "" : "; ", v.node_id(), ": ", v.reason());
  return out;
}

DrainPlan PlanDrain(const NodeId& node, const std::vector<VmRecord>& vms, PlacementOracle* oracle) {
  std::vector<const VmRecord*> sorted;
  for (const VmRecord& vm : vms) sorted.push_back(&vm);
  std::sort(sorted.begin(), sorted.end(), [](const VmRecord* a, const VmRecord* b) { return a->vm_id() < b->vm_id(); });
  DrainPlan plan;
  plan.node = node;
  for (const VmRecord* vm : sorted) {
    if (!vm->pinned_node_id().empty()) {
      plan.pinned.emplace_back(vm->vm_id());
      continue;
    }
    PlannedMove move{VmId(vm->vm_id()), node, NodeId(), ""};
    if (vm->state() != ppn::types::v1::VM_STATE_RUNNING) {
      move.reason = absl::StrCat("vm is ", ppn::types::v1::VmState_Name(vm->state()), ", not running: it cannot move");
    } else if (absl::StatusOr<ppn::fleet::v1::PlacementDecision> d = oracle->ExplainPlacement(vm->spec(), {node});
               !d.ok()) {
      move.reason = absl::StrCat("placement could not be asked: ", d.status().message());
    } else if (d->chosen_node_id().empty()) {
      move.reason = absl::StrCat("no node can take it: ", Verdicts(*d));
    } else {
      move.target = NodeId(d->chosen_node_id());
      move.reason =
          absl::StrCat("drain ", node.value(), ": placement chose ", d->chosen_node_id(), " (", ChosenReason(*d), ")");
    }
    plan.moves.push_back(std::move(move));
  }
  return plan;
}

RebalancePlan PlanRebalance(const std::vector<ppn::fleet::v1::Node>& nodes, const std::vector<VmRecord>& vms,
                            PlacementOracle* oracle, int max_moves) {
  std::map<std::string, int64_t> free;  // alive nodes only
  std::vector<NodeId> all;
  for (const auto& n : nodes) {
    all.emplace_back(n.node_id());
    if (n.state() != ppn::fleet::v1::NODE_STATE_ALIVE) continue;
    free[n.node_id()] = std::max<int64_t>(
        0, static_cast<int64_t>(n.available_memory_mib()) - static_cast<int64_t>(n.reserved_memory_mib()));
  }
  std::vector<const VmRecord*> candidates;
  for (const VmRecord& vm : vms) {
    if (Movable(vm)) candidates.push_back(&vm);
  }
  // Smallest first: the least memory moved for the gap it narrows.
  std::sort(candidates.begin(), candidates.end(), [](const VmRecord* a, const VmRecord* b) {
    return a->spec().memory_mib() != b->spec().memory_mib() ? a->spec().memory_mib() < b->spec().memory_mib()
                                                            : a->vm_id() < b->vm_id();
  });
  RebalancePlan plan;
  std::set<std::string> moved;
  while (static_cast<int>(plan.moves.size()) < max_moves && free.size() >= 2) {
    auto low = std::min_element(free.begin(), free.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second < b.second : a.first < b.first;
    });
    bool planned = false;
    for (const VmRecord* vm : candidates) {
      if (vm->node_id() != low->first || moved.count(vm->vm_id()) != 0) continue;
      const int64_t mem = vm->spec().memory_mib();
      // Nodes the move would even things out with; placement chooses among them.
      std::vector<NodeId> excluded;
      for (const NodeId& n : all) {
        auto it = free.find(n.value());
        if (it == free.end() || it == low || it->second - low->second <= 2 * mem) excluded.push_back(n);
      }
      if (excluded.size() == all.size()) break;  // a larger VM would not narrow the gap either
      absl::StatusOr<ppn::fleet::v1::PlacementDecision> d = oracle->ExplainPlacement(vm->spec(), excluded);
      if (!d.ok()) {
        plan.notes.push_back(
            absl::StrCat("placement could not be asked for vm ", vm->vm_id(), ": ", d.status().message()));
        return plan;
      }
      auto target = free.find(d->chosen_node_id());
      if (d->chosen_node_id().empty() || target == free.end() || target == low) {
        plan.notes.push_back(
            absl::StrCat("vm ", vm->vm_id(), " stays on ", low->first, ": no node can take it: ", Verdicts(*d)));
        moved.insert(vm->vm_id());
        continue;
      }
      plan.moves.push_back(
          {VmId(vm->vm_id()), NodeId(low->first), NodeId(target->first),
           absl::StrCat(low->first, " has ", low->second, " MiB free, ", target->first, " has ", target->second,
                        "; placement chose ", target->first, " (", ChosenReason(*d), ")")});
      moved.insert(vm->vm_id());
      low->second += mem;
      target->second -= mem;
      planned = true;
      break;
    }
    if (!planned) break;
  }
  return plan;
}

}  // namespace ppn::scheduler
