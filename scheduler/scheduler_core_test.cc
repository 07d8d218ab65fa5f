#include "scheduler/scheduler_core.h"

#include "absl/strings/numbers.h"
#include "catch2/catch.hpp"
#include "scheduler/testing/fake_peers.h"
#include "tests/fakes/fake_clock.h"

namespace ppn::scheduler {
namespace {

using ppn::scheduler::testing::FakeAgents;
using ppn::scheduler::testing::FakeFleet;
using ppn::scheduler::testing::FakeLedger;

constexpr char kOperator[] = "spiffe://ppn.test/operator/alice";

struct World {
  World() {
    fleet.AddNode("laptop-a", 200);
    fleet.AddNode("laptop-b", 1500);
  }
  void Run(const std::string& vm, const std::string& node, uint32_t memory_mib = 128) {
    fleet.AddVm(vm, node, memory_mib);
    agents.Node(node).PutVm(vm, ppn::types::v1::VM_STATE_RUNNING);
  }
  ProgressFn Collect() {
    return [this](const MigrationProgress& p) {
      if (p.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED || p.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED)
        finals.push_back(p);
      return true;
    };
  }

  ppn::testing::FakeClock clock;
  FakeFleet fleet;
  FakeAgents agents;
  FakeLedger ledger;
  Migrator migrator{{&fleet, &agents, &ledger, &clock, [this](absl::Duration d) { clock.Advance(d); }}, {}};
  SchedulerCore core{&fleet, &ledger, &migrator};
  std::vector<MigrationProgress> finals;
};

TEST_CASE("drain appends its plan to the ledger, then moves each VM and ends each move with a report",
          "[scheduler][core]") {
  World w;
  w.Run("vm-1", "laptop-a");
  w.Run("vm-2", "laptop-a");
  w.fleet.AddVm("vm-pinned", "laptop-a").set_pinned_node_id("laptop-a");
  DrainPlan seen;
  absl::Status s = w.core.Drain(
      NodeId("laptop-a"), /*dry_run=*/false, kOperator,
      [&](const DrainPlan& plan) {
        seen = plan;
        return true;
      },
      w.Collect());
  REQUIRE(s.ok());
  REQUIRE(seen.moves.size() == 2);
  CHECK(seen.pinned == std::vector<VmId>{VmId("vm-pinned")});
  REQUIRE(w.finals.size() == 2);
  for (const auto& f : w.finals) CHECK(f.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-b");
  CHECK(w.fleet.Vm("vm-2").node_id() == "laptop-b");
  auto drains = w.ledger.OfKind("scheduler.drain");
  REQUIRE(drains.size() == 1);
  CHECK(drains[0].subject() == "laptop-a");
  CHECK(drains[0].outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  CHECK(drains[0].attributes().at("moves") == "2");
  CHECK(drains[0].attributes().at("pinned") == "vm-pinned");
  CHECK(drains[0].attributes().at("by") == kOperator);
  CHECK(drains[0].attributes().at("move.001") ==
        "vm-1 laptop-a>laptop-b: drain laptop-a: placement chose laptop-b (1500 MiB free)");
  CHECK(w.ledger.OfKind("vm.migrate").size() == 2);
  // The plan is in the ledger before the first move.
  CHECK(w.ledger.entries()[0].kind() == "scheduler.drain");
}

TEST_CASE("a dry-run drain or rebalance plans but neither moves anything nor writes the ledger", "[scheduler][core]") {
  World w;
  w.Run("vm-1", "laptop-a");
  int plans = 0;
  REQUIRE(w.core
              .Drain(
                  NodeId("laptop-a"), /*dry_run=*/true, kOperator,
                  [&](const DrainPlan& plan) { return ++plans, plan.moves.size() == 1; }, w.Collect())
              .ok());
  REQUIRE(w.core
              .Rebalance(
                  /*dry_run=*/true, kOperator,
                  [&](const RebalancePlan& plan) { return ++plans, plan.moves.size() == 1; }, w.Collect())
              .ok());
  CHECK(plans == 2);
  CHECK(w.finals.empty());
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-a");
  CHECK(w.ledger.entries().empty());
}

TEST_CASE("drain cordons the node before it plans so nothing moves back and a dry run cordons nothing",
          "[scheduler][core][cordon]") {
  World w;
  w.fleet.AddNode("laptop-c", 900);
  w.Run("vm-1", "laptop-a");
  w.Run("vm-2", "laptop-b");
  auto cordoned = [&](const std::string& id) {
    std::vector<ppn::fleet::v1::Node> nodes = *w.fleet.ListNodes();
    for (const auto& n : nodes) {
      if (n.node_id() == id) return n.cordoned();
    }
    return false;
  };
  REQUIRE(w.core
              .Drain(
                  NodeId("laptop-b"), /*dry_run=*/true, kOperator, [](const DrainPlan&) { return true; }, w.Collect())
              .ok());
  CHECK_FALSE(cordoned("laptop-b"));
  REQUIRE(w.core
              .Drain(
                  NodeId("laptop-b"), /*dry_run=*/false, kOperator, [](const DrainPlan&) { return true; }, w.Collect())
              .ok());
  CHECK(cordoned("laptop-b"));
  CHECK(w.fleet.Vm("vm-2").node_id() == "laptop-c");
  // Draining another node next: its VM goes anywhere but the cordoned laptop-b (the most free).
  REQUIRE(w.core
              .Drain(
                  NodeId("laptop-a"), /*dry_run=*/false, kOperator, [](const DrainPlan&) { return true; }, w.Collect())
              .ok());
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-c");
}

TEST_CASE("a migration to a cordoned node is refused before anything moves", "[scheduler][core][cordon]") {
  World w;
  w.Run("vm-1", "laptop-a");
  REQUIRE(w.fleet.CordonNode(NodeId("laptop-b"), "maintenance").ok());
  MigrationRequest to_b;
  to_b.vm = VmId("vm-1");
  to_b.target = NodeId("laptop-b");
  absl::StatusOr<MigrationProgress> refused = w.core.Migrate(to_b, w.Collect());
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(refused.status().message() == "node laptop-b is cordoned; uncordon it first to move a VM there");
  MigrationRequest anywhere;
  anywhere.vm = VmId("vm-1");
  CHECK(w.core.Migrate(anywhere, w.Collect()).status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-a");
}

TEST_CASE("drain refuses an empty or unknown node", "[scheduler][core]") {
  World w;
  auto plan = [](const DrainPlan&) { return true; };
  absl::Status none = w.core.Drain(NodeId(), false, kOperator, plan, w.Collect());
  CHECK(none.code() == absl::StatusCode::kInvalidArgument);
  absl::Status unknown = w.core.Drain(NodeId("laptop-z"), false, kOperator, plan, w.Collect());
  CHECK(unknown.code() == absl::StatusCode::kNotFound);
  CHECK(unknown.message() == "unknown node laptop-z");
  CHECK(w.ledger.entries().empty());
}

TEST_CASE("rebalance appends its plan and reports every move, also one that never started",
          "[scheduler][core][regression]") {
  World w;
  w.Run("vm-1", "laptop-a");
  RebalancePlan seen;
  absl::Status s = w.core.Rebalance(
      /*dry_run=*/false, kOperator,
      [&](const RebalancePlan& plan) {
        seen = plan;
        // Pinned after the plan was made: the move cannot start.
        w.fleet.AddVm("vm-1", "laptop-a").set_pinned_node_id("laptop-a");
        return true;
      },
      w.Collect());
  REQUIRE(s.ok());
  REQUIRE(seen.moves.size() == 1);
  CHECK(seen.moves[0].target == NodeId("laptop-b"));
  REQUIRE(w.finals.size() == 1);
  CHECK(w.finals[0].phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  CHECK(w.finals[0].vm_id() == "vm-1");
  CHECK(w.finals[0].target_node_id() == "laptop-b");
  CHECK(w.finals[0].message() == "not started: vm vm-1 is pinned to node laptop-a; unpin it to move it");
  auto entries = w.ledger.OfKind("scheduler.rebalance");
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].attributes().at("moves") == "1");
  CHECK(entries[0].attributes().at("move.001").find("vm-1 laptop-a>laptop-b: laptop-a has 200 MiB free") == 0);
}

TEST_CASE("a plan too large for one ledger entry is cut within the ledger's limits and says how much",
          "[scheduler][core]") {
  std::vector<PlannedMove> moves;
  for (int i = 0; i < 200; ++i) {
    moves.push_back({VmId("vm-" + std::to_string(i)), NodeId("laptop-a"), NodeId("laptop-b"), std::string(500, 'x')});
  }
  ppn::ledger::v1::AppendRequest entry = PlanEntry("scheduler.drain", "laptop-a", moves, {{"by", kOperator}});
  size_t bytes = 0;
  for (const auto& [k, v] : entry.attributes()) bytes += k.size() + v.size();
  CHECK(bytes <= 4096);
  CHECK(entry.attributes_size() <= 64);
  CHECK(entry.attributes().at("moves") == "200");
  int omitted = 0;
  REQUIRE(absl::SimpleAtoi(entry.attributes().at("omitted"), &omitted));
  CHECK(omitted + entry.attributes_size() - 3 == 200);  // besides moves, by and omitted: one per move
}

TEST_CASE("pin and unpin go to the fleet and to the ledger with the caller", "[scheduler][core]") {
  World w;
  w.Run("vm-1", "laptop-a");
  absl::StatusOr<NodeId> pinned = w.core.Pin(VmId("vm-1"), NodeId("laptop-a"), kOperator);
  REQUIRE(pinned.ok());
  CHECK(*pinned == NodeId("laptop-a"));
  CHECK(w.fleet.Vm("vm-1").pinned_node_id() == "laptop-a");
  REQUIRE(w.core.Unpin(VmId("vm-1"), kOperator).ok());
  CHECK(w.fleet.Vm("vm-1").pinned_node_id().empty());
  auto entries = w.ledger.entries();
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].kind() == "vm.pin");
  CHECK(entries[0].tenant_id() == "acme");
  CHECK(entries[0].subject() == "vm-1");
  CHECK(entries[0].attributes().at("node") == "laptop-a");
  CHECK(entries[0].attributes().at("by") == kOperator);
  CHECK(entries[1].kind() == "vm.unpin");

  SECTION("a refused pin writes nothing") {
    CHECK(w.core.Pin(VmId("vm-1"), NodeId(), kOperator).status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(w.core.Pin(VmId("vm-1"), NodeId("laptop-b"), kOperator).status().code() ==
          absl::StatusCode::kFailedPrecondition);
    CHECK(w.core.Unpin(VmId("vm-404"), kOperator).code() == absl::StatusCode::kNotFound);
    CHECK(w.ledger.entries().size() == 2);
  }
}

}  // namespace
}  // namespace ppn::scheduler
