#include "scheduler/planner.h"

#include <functional>

#include "catch2/catch.hpp"
#include "scheduler/testing/fake_peers.h"

namespace ppn::scheduler {
namespace {

using ppn::fleet::v1::Node;
using ppn::fleet::v1::PlacementDecision;
using ppn::fleet::v1::VmRecord;
using ppn::scheduler::testing::FakeFleet;

// An oracle that answers with `fn` and remembers what it was asked.
class ScriptedOracle final : public PlacementOracle {
 public:
  using Fn =
      std::function<absl::StatusOr<PlacementDecision>(const ppn::types::v1::VmSpec&, const std::vector<NodeId>&)>;
  explicit ScriptedOracle(Fn fn) : fn_(std::move(fn)) {}
  absl::StatusOr<PlacementDecision> ExplainPlacement(const ppn::types::v1::VmSpec& spec,
                                                     const std::vector<NodeId>& excluded) override {
    asked.push_back(excluded);
    return fn_(spec, excluded);
  }
  std::vector<std::vector<NodeId>> asked;

 private:
  Fn fn_;
};

PlacementDecision Chose(const std::string& node, const std::string& reason) {
  PlacementDecision d;
  d.set_chosen_node_id(node);
  auto* v = d.add_verdicts();
  v->set_node_id(node);
  v->set_eligible(true);
  v->set_reason(reason);
  return d;
}

bool Has(const std::vector<NodeId>& nodes, const std::string& id) {
  return std::find(nodes.begin(), nodes.end(), NodeId(id)) != nodes.end();
}

struct Pool {
  FakeFleet fleet;
  std::vector<Node> nodes() { return *fleet.ListNodes(); }
  std::vector<VmRecord> vms() { return *fleet.ListVms(NodeId()); }
};

TEST_CASE("a drain plan sends every unpinned VM where placement says, with reasons, and lists pinned ones",
          "[scheduler][planner]") {
  Pool p;
  p.fleet.AddNode("laptop-a", 1024);
  p.fleet.AddNode("laptop-b", 512);
  p.fleet.AddNode("laptop-c", 768);
  p.fleet.AddVm("vm-1", "laptop-a");
  p.fleet.AddVm("vm-2", "laptop-a").set_pinned_node_id("laptop-a");
  p.fleet.AddVm("vm-3", "laptop-a").set_state(ppn::types::v1::VM_STATE_UNKNOWN);
  DrainPlan plan = PlanDrain(NodeId("laptop-a"), p.vms(), &p.fleet);
  CHECK(plan.node == NodeId("laptop-a"));
  REQUIRE(plan.pinned == std::vector<VmId>{VmId("vm-2")});
  REQUIRE(plan.moves.size() == 2);
  CHECK(plan.moves[0].vm == VmId("vm-1"));
  CHECK(plan.moves[0].source == NodeId("laptop-a"));
  CHECK(plan.moves[0].target == NodeId("laptop-c"));
  CHECK(plan.moves[0].reason == "drain laptop-a: placement chose laptop-c (768 MiB free)");
  CHECK(plan.moves[1].vm == VmId("vm-3"));
  CHECK(plan.moves[1].target.empty());
  CHECK(plan.moves[1].reason == "vm is VM_STATE_UNKNOWN, not running: it cannot move");
  // Placement was asked once, for the running VM, with the drained node left out.
  REQUIRE(p.fleet.placement_queries().size() == 1);
  CHECK(p.fleet.placement_queries()[0] == std::vector<NodeId>{NodeId("laptop-a")});
}

TEST_CASE("a drain plan reports a placement question that failed instead of dropping it",
          "[scheduler][planner][regression]") {
  Pool p;
  p.fleet.AddNode("laptop-a", 1024);
  p.fleet.AddNode("laptop-b", 1024);
  p.fleet.AddVm("vm-1", "laptop-a");
  SECTION("the fleet did not answer") {
    p.fleet.FailPlacement(absl::UnavailableError("fleet unreachable"));
    DrainPlan plan = PlanDrain(NodeId("laptop-a"), p.vms(), &p.fleet);
    REQUIRE(plan.moves.size() == 1);
    CHECK(plan.moves[0].target.empty());
    CHECK(plan.moves[0].reason == "placement could not be asked: fleet unreachable");
  }
  SECTION("no node has room, with every node's reason") {
    p.fleet.AddNode("laptop-b", 64);
    DrainPlan plan = PlanDrain(NodeId("laptop-a"), p.vms(), &p.fleet);
    REQUIRE(plan.moves.size() == 1);
    CHECK(plan.moves[0].target.empty());
    CHECK(plan.moves[0].reason == "no node can take it: laptop-a: excluded; laptop-b: no room");
  }
}

TEST_CASE("a rebalance plan moves the smallest VMs off the fullest node to where placement puts them",
          "[scheduler][planner]") {
  Pool p;
  p.fleet.AddNode("laptop-a", 200);
  p.fleet.AddNode("laptop-b", 1000);
  p.fleet.AddNode("laptop-c", 900);
  p.fleet.AddVm("vm-big", "laptop-a", 256);
  p.fleet.AddVm("vm-small", "laptop-a", 128);
  RebalancePlan plan = PlanRebalance(p.nodes(), p.vms(), &p.fleet);
  REQUIRE(plan.moves.size() == 2);
  CHECK(plan.moves[0].vm == VmId("vm-small"));
  CHECK(plan.moves[0].source == NodeId("laptop-a"));
  CHECK(plan.moves[0].target == NodeId("laptop-b"));
  CHECK(plan.moves[0].reason ==
        "laptop-a has 200 MiB free, laptop-b has 1000; placement chose laptop-b (1000 MiB free)");
  // laptop-a has 328 free now, laptop-b 872: both laptop-b and laptop-c still even things out
  // for vm-big, and placement (not the planner) picks between them.
  CHECK(plan.moves[1].vm == VmId("vm-big"));
  CHECK(plan.moves[1].target == NodeId("laptop-b"));
  CHECK_FALSE(Has(p.fleet.placement_queries()[1], "laptop-b"));
  CHECK_FALSE(Has(p.fleet.placement_queries()[1], "laptop-c"));
  CHECK(plan.notes.empty());
  // Each question left out the source.
  for (const auto& asked : p.fleet.placement_queries()) CHECK(Has(asked, "laptop-a"));
}

TEST_CASE("rebalance leaves the target to placement: only nodes the move would not even out are left out",
          "[scheduler][planner]") {
  Pool p;
  p.fleet.AddNode("laptop-a", 100);
  p.fleet.AddNode("laptop-b", 1000);  // most free, but placement prefers KVM on laptop-c
  p.fleet.AddNode("laptop-c", 800);
  p.fleet.AddNode("laptop-d", 300);  // 300 - 100 <= 2 * 128: moving there would not even things out
  p.fleet.AddNode("laptop-e", 4000, ppn::fleet::v1::NODE_STATE_UNREACHABLE);
  p.fleet.AddVm("vm-1", "laptop-a");
  ScriptedOracle kvm_first(
      [](const ppn::types::v1::VmSpec&, const std::vector<NodeId>&) { return Chose("laptop-c", "kvm, 800 MiB free"); });
  RebalancePlan plan = PlanRebalance(p.nodes(), p.vms(), &kvm_first);
  REQUIRE(plan.moves.size() == 1);
  CHECK(plan.moves[0].target == NodeId("laptop-c"));
  CHECK(plan.moves[0].reason ==
        "laptop-a has 100 MiB free, laptop-c has 800; placement chose laptop-c (kvm, 800 MiB free)");
  REQUIRE(kvm_first.asked.size() == 1);
  const std::vector<NodeId>& excluded = kvm_first.asked[0];
  CHECK(Has(excluded, "laptop-a"));
  CHECK_FALSE(Has(excluded, "laptop-b"));
  CHECK_FALSE(Has(excluded, "laptop-c"));
  CHECK(Has(excluded, "laptop-d"));
  CHECK(Has(excluded, "laptop-e"));
}

TEST_CASE("rebalance counts memory held for creates in flight as taken", "[scheduler][planner]") {
  std::vector<Node> nodes(2);
  nodes[0].set_node_id("laptop-a");
  nodes[0].set_state(ppn::fleet::v1::NODE_STATE_ALIVE);
  nodes[0].set_available_memory_mib(100);
  nodes[1].set_node_id("laptop-b");
  nodes[1].set_state(ppn::fleet::v1::NODE_STATE_ALIVE);
  nodes[1].set_available_memory_mib(1000);
  nodes[1].set_reserved_memory_mib(800);  // 200 really free: a 128 MiB move would not even out
  FakeFleet fleet;
  VmRecord& vm = fleet.AddVm("vm-1", "laptop-a");
  RebalancePlan plan = PlanRebalance(nodes, {vm}, &fleet);
  CHECK(plan.moves.empty());
  CHECK(fleet.placement_queries().empty());
}

TEST_CASE("rebalance notes a VM placement will not take and tries the next", "[scheduler][planner]") {
  Pool p;
  p.fleet.AddNode("laptop-a", 100);
  p.fleet.AddNode("laptop-b", 2000);
  p.fleet.AddVm("vm-kvm", "laptop-a", 128).mutable_spec()->set_display_name("needs-kvm");
  p.fleet.AddVm("vm-tcg", "laptop-a", 256);
  ScriptedOracle oracle([](const ppn::types::v1::VmSpec& spec, const std::vector<NodeId>&) {
    if (spec.display_name() != "needs-kvm") return absl::StatusOr<PlacementDecision>(Chose("laptop-b", "tcg"));
    PlacementDecision none;
    auto* v = none.add_verdicts();
    v->set_node_id("laptop-b");
    v->set_reason("no KVM");
    return absl::StatusOr<PlacementDecision>(none);
  });
  RebalancePlan plan = PlanRebalance(p.nodes(), p.vms(), &oracle);
  REQUIRE(plan.moves.size() == 1);
  CHECK(plan.moves[0].vm == VmId("vm-tcg"));
  REQUIRE(plan.notes.size() == 1);
  CHECK(plan.notes[0] == "vm vm-kvm stays on laptop-a: no node can take it: laptop-b: no KVM");
}

TEST_CASE("rebalance stops at a placement question that failed and says so", "[scheduler][planner]") {
  Pool p;
  p.fleet.AddNode("laptop-a", 100);
  p.fleet.AddNode("laptop-b", 2000);
  p.fleet.AddVm("vm-1", "laptop-a");
  p.fleet.FailPlacement(absl::UnavailableError("fleet unreachable"));
  RebalancePlan plan = PlanRebalance(p.nodes(), p.vms(), &p.fleet);
  CHECK(plan.moves.empty());
  REQUIRE(plan.notes.size() == 1);
  CHECK(plan.notes[0] == "placement could not be asked for vm vm-1: fleet unreachable");
}

TEST_CASE("rebalance leaves pinned and stopped VMs and an even pool alone, and plans at most max_moves",
          "[scheduler][planner]") {
  Pool p;
  p.fleet.AddNode("laptop-a", 100);
  p.fleet.AddNode("laptop-b", 5000);
  p.fleet.AddVm("vm-pinned", "laptop-a").set_pinned_node_id("laptop-a");
  p.fleet.AddVm("vm-unknown", "laptop-a").set_state(ppn::types::v1::VM_STATE_UNKNOWN);
  CHECK(PlanRebalance(p.nodes(), p.vms(), &p.fleet).moves.empty());
  for (int i = 0; i < 5; ++i) p.fleet.AddVm("vm-" + std::to_string(i), "laptop-a", 64);
  CHECK(PlanRebalance(p.nodes(), p.vms(), &p.fleet, 3).moves.size() == 3);

  Pool even;
  even.fleet.AddNode("laptop-a", 1000);
  even.fleet.AddNode("laptop-b", 1100);
  even.fleet.AddVm("vm-1", "laptop-a");
  CHECK(PlanRebalance(even.nodes(), even.vms(), &even.fleet).moves.empty());
}

}  // namespace
}  // namespace ppn::scheduler
