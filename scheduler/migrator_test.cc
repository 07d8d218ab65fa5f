#include "scheduler/migrator.h"

#include <set>

#include "catch2/catch.hpp"
#include "scheduler/testing/fake_peers.h"
#include "tests/fakes/fake_clock.h"

namespace ppn::scheduler {
namespace {

using ppn::scheduler::testing::FakeAgent;
using ppn::scheduler::testing::FakeAgents;
using ppn::scheduler::testing::FakeFleet;
using ppn::scheduler::testing::FakeLedger;
using ppn::scheduler::testing::Report;
using ppn::types::v1::MigrationPhase;
using ppn::types::v1::VM_STATE_FAILED;
using ppn::types::v1::VM_STATE_MIGRATING;
using ppn::types::v1::VM_STATE_RUNNING;

// Two nodes, vm-1 running on laptop-a; sleeping advances the fake clock.
struct World {
  World() {
    fleet.AddNode("laptop-a", 2048);
    fleet.AddNode("laptop-b", 1536);
    fleet.AddVm("vm-1", "laptop-a");
    source().PutVm("vm-1", VM_STATE_RUNNING);
  }
  FakeAgent& source() { return agents.Node("laptop-a"); }
  FakeAgent& target() { return agents.Node("laptop-b"); }
  absl::StatusOr<MigrationProgress> Migrate(const std::string& to = "laptop-b") {
    return migrator.Migrate({VmId("vm-1"), NodeId(to), 0}, [this](const MigrationProgress& p) {
      phases.insert(p.phase());
      return true;
    });
  }
  std::vector<ppn::ledger::v1::AppendRequest> migrations() { return ledger.OfKind("vm.migrate"); }
  // A source whose stream reports `phases` and then breaks, as when its agent is killed;
  // `after` runs at the break (the source's QEMU may go on without its agent).
  void SourceBreaksAfter(std::vector<MigrationPhase> sent, std::function<void()> after = nullptr) {
    source().SetMigrateOut([sent, after](const OutgoingMigration& m, const ProgressFn& progress) {
      for (MigrationPhase phase : sent) progress(Report(m, "laptop-a", phase));
      if (after) after();
      return absl::StatusOr<MigrationProgress>(absl::UnavailableError("Socket closed"));
    });
  }
  // The target's copy shows `state` from its `from`-th ListVms on (0 is the first).
  void TargetTurns(int from, ppn::types::v1::VmState state) {
    target().OnList([this, from, state](int n) {
      if (n >= from) target().PutVm("vm-1", state);
    });
  }

  ppn::testing::FakeClock clock;
  FakeFleet fleet;
  FakeAgents agents;
  FakeLedger ledger;
  std::set<int> phases;
  Migrator migrator{{&fleet, &agents, &ledger, &clock, [this](absl::Duration d) { clock.Advance(d); }}, {}};
};

TEST_CASE("a migration prepares the target, streams the source, records the move and appends vm.migrate",
          "[scheduler][migrator]") {
  World w;
  absl::StatusOr<MigrationProgress> done = w.Migrate();
  REQUIRE(done.ok());
  CHECK(done->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(done->message() == "running on laptop-b");
  REQUIRE(done->forwarded_ports_size() == 1);
  CHECK(done->forwarded_ports(0).host_port() == 21000);
  CHECK(w.phases == std::set<int>{ppn::types::v1::MIGRATION_PHASE_PREPARING, ppn::types::v1::MIGRATION_PHASE_DISK,
                                  ppn::types::v1::MIGRATION_PHASE_MEMORY, ppn::types::v1::MIGRATION_PHASE_SWITCHOVER});
  // A prepared target that never gets a stream removes itself after this.
  CHECK(w.target().last_ready_timeout() == absl::Seconds(30));
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-b");
  CHECK(w.fleet.Vm("vm-1").forwarded_ports(0).host_port() == 21000);
  auto entries = w.migrations();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  CHECK(entries[0].tenant_id() == "acme");
  CHECK(entries[0].subject() == "vm-1");
  CHECK(entries[0].attributes().at("source") == "laptop-a");
  CHECK(entries[0].attributes().at("target") == "laptop-b");
  CHECK(entries[0].attributes().at("fleet_recorded") == "true");
}

TEST_CASE("without a named target the fleet's placement chooses, leaving out the source", "[scheduler][migrator]") {
  World w;
  absl::StatusOr<MigrationProgress> done = w.Migrate("");
  REQUIRE(done.ok());
  CHECK(done->target_node_id() == "laptop-b");
  REQUIRE(w.fleet.placement_queries().size() == 1);
  CHECK(w.fleet.placement_queries()[0] == std::vector<NodeId>{NodeId("laptop-a")});

  SECTION("and no node with room is RESOURCE_EXHAUSTED with every node's reason") {
    World full;
    full.fleet.AddNode("laptop-b", 64);
    absl::StatusOr<MigrationProgress> refused = full.Migrate("");
    CHECK(refused.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK(refused.status().message() == "no node can take vm vm-1: laptop-a: excluded; laptop-b: no room");
  }
}

TEST_CASE("a pinned or stopped VM is refused before anything is prepared", "[scheduler][migrator]") {
  World w;
  SECTION("pinned") {
    w.fleet.AddVm("vm-1", "laptop-a").set_pinned_node_id("laptop-a");
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(r.status().message() == "vm vm-1 is pinned to node laptop-a; unpin it to move it");
  }
  SECTION("not running") {
    w.fleet.AddVm("vm-1", "laptop-a").set_state(ppn::types::v1::VM_STATE_UNKNOWN);
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(r.status().message() == "vm vm-1 is VM_STATE_UNKNOWN, not running");
  }
  SECTION("to its own node, or to a node the fleet does not know") {
    CHECK(w.Migrate("laptop-a").status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(w.Migrate("laptop-z").status().message() == "unknown node laptop-z");
  }
  CHECK_FALSE(w.target().Get("vm-1").has_value());
  CHECK(w.migrations().empty());
}

TEST_CASE("a target that cannot prepare fails the migration and leaves the source as it was", "[scheduler][migrator]") {
  World w;
  SECTION("whatever it left is removed") {
    w.target().FailPrepare(absl::ResourceExhaustedError("node laptop-b has 0 MiB available"));
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    REQUIRE(r.ok());
    CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
    CHECK(r->message() == "target laptop-b could not prepare: node laptop-b has 0 MiB available");
    CHECK(w.target().destroys() == 1);
  }
  SECTION("a live copy it already holds that does not go away is not this attempt's to remove") {
    w.target().PutVm("vm-1", VM_STATE_MIGRATING);
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    REQUIRE(r.ok());
    CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
    CHECK(r->message() == "target laptop-b could not prepare: vm vm-1 already exists on node laptop-b");
    CHECK(w.target().destroys() == 0);
    CHECK(w.target().Get("vm-1").has_value());
    // It was given the time a copy waiting for a stream takes to remove itself.
    CHECK(w.clock.Now() - absl::FromUnixSeconds(1795000000) >= absl::Seconds(40));
  }
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-a");
  CHECK(w.source().Get("vm-1")->state() == VM_STATE_RUNNING);
  CHECK(w.source().resumes() == 0);
  auto entries = w.migrations();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].outcome() == ppn::ledger::v1::OUTCOME_FAILURE);
  CHECK(entries[0].attributes().at("reason").find("could not prepare") != std::string::npos);
}

// Issue 15 item 12: after a scheduler crash mid-migration the retry failed with "already exists
// on node laptop-b".
TEST_CASE("a copy a crashed earlier attempt left on the target is waited out and the migration goes ahead",
          "[scheduler][migrator][regression]") {
  World w;
  SECTION("a failed copy") { w.target().PutVm("vm-1", VM_STATE_FAILED); }
  SECTION("a copy that removes itself a moment later") {
    w.target().PutVm("vm-1", VM_STATE_MIGRATING);
    w.target().OnList([&](int n) {
      if (n == 2) w.target().Remove("vm-1");
    });
  }
  absl::StatusOr<MigrationProgress> r = w.Migrate();
  REQUIRE(r.ok());
  INFO(r->message());
  CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-b");
  CHECK(w.target().Get("vm-1")->state() == VM_STATE_RUNNING);
}

TEST_CASE("a source stream that breaks in any phase leaves the VM on the source and no copy on the target",
          "[scheduler][migrator]") {
  World w;
  std::vector<MigrationPhase> sent;
  SECTION("before its first report") {}
  SECTION("while copying the disk") { sent = {ppn::types::v1::MIGRATION_PHASE_DISK}; }
  SECTION("while copying memory") {
    sent = {ppn::types::v1::MIGRATION_PHASE_DISK, ppn::types::v1::MIGRATION_PHASE_MEMORY};
  }
  SECTION("at switchover") {
    sent = {ppn::types::v1::MIGRATION_PHASE_DISK, ppn::types::v1::MIGRATION_PHASE_MEMORY,
            ppn::types::v1::MIGRATION_PHASE_SWITCHOVER};
  }
  w.SourceBreaksAfter(sent);
  // The target's QEMU sees its stream end a moment later and fails.
  w.TargetTurns(2, VM_STATE_FAILED);
  absl::StatusOr<MigrationProgress> r = w.Migrate();
  REQUIRE(r.ok());
  CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  CHECK(r->message().find("source laptop-a: Socket closed") == 0);
  CHECK_FALSE(w.target().Get("vm-1").has_value());
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-a");
  CHECK(w.fleet.record_calls() == 0);
  REQUIRE(w.migrations().size() == 1);
  CHECK(w.migrations()[0].outcome() == ppn::ledger::v1::OUTCOME_FAILURE);
}

TEST_CASE("a source that refuses to send has its prepared target removed at once", "[scheduler][migrator]") {
  World w;
  w.source().SetMigrateOut([](const OutgoingMigration&, const ProgressFn&) {
    return absl::StatusOr<MigrationProgress>(absl::FailedPreconditionError("vm vm-1 is not running"));
  });
  absl::StatusOr<MigrationProgress> r = w.Migrate();
  REQUIRE(r.ok());
  CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  CHECK(r->message() == "source laptop-a: vm vm-1 is not running");
  CHECK_FALSE(w.target().Get("vm-1").has_value());
  CHECK(w.clock.Now() == absl::FromUnixSeconds(1795000000));  // no waiting
}

TEST_CASE("a source that reports the migration FAILED has the target's copy removed and keeps the guest",
          "[scheduler][migrator]") {
  World w;
  w.source().SetMigrateOut([](const OutgoingMigration& m, const ProgressFn& progress) {
    progress(Report(m, "laptop-a", ppn::types::v1::MIGRATION_PHASE_MEMORY));
    MigrationProgress failed = Report(m, "laptop-a", ppn::types::v1::MIGRATION_PHASE_FAILED);
    failed.set_message("Unable to write to socket: Connection reset by peer");
    return absl::StatusOr<MigrationProgress>(failed);
  });
  absl::StatusOr<MigrationProgress> r = w.Migrate();
  REQUIRE(r.ok());
  CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  CHECK(r->message() == "Unable to write to socket: Connection reset by peer");
  CHECK_FALSE(w.target().Get("vm-1").has_value());
  CHECK(w.source().Get("vm-1")->state() == VM_STATE_RUNNING);
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-a");
}

// Issue 15 item 13: the scheduler removed the target's copy on the strength of one ListVms
// while the source's QEMU, its agent dead, was still sending.
TEST_CASE("after a broken stream a target still receiving is waited for, and one that takes over is recorded",
          "[scheduler][migrator][regression]") {
  World w;
  w.SourceBreaksAfter({ppn::types::v1::MIGRATION_PHASE_DISK, ppn::types::v1::MIGRATION_PHASE_MEMORY});
  w.TargetTurns(5, VM_STATE_RUNNING);  // MIGRATING for five looks, then the guest runs there
  absl::StatusOr<MigrationProgress> r = w.Migrate();
  REQUIRE(r.ok());
  INFO(r->message());
  CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(r->message() == "running on laptop-b (the source's stream ended: Socket closed)");
  CHECK(w.target().destroys() == 0);
  CHECK(w.target().Get("vm-1")->state() == VM_STATE_RUNNING);
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-b");
  REQUIRE(w.migrations().size() == 1);
  CHECK(w.migrations()[0].outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);

  SECTION("a copy the source left paused after sending is removed once the target runs the guest") {
    World paused;
    paused.SourceBreaksAfter({ppn::types::v1::MIGRATION_PHASE_SWITCHOVER},
                             [&] { paused.source().PutVm("vm-1", VM_STATE_MIGRATING, /*migrated_out=*/true); });
    paused.TargetTurns(1, VM_STATE_RUNNING);
    absl::StatusOr<MigrationProgress> moved = paused.Migrate();
    REQUIRE(moved.ok());
    CHECK(moved->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
    CHECK_FALSE(paused.source().Get("vm-1").has_value());
    CHECK(paused.source().resumes() == 0);
  }
  SECTION("a target that never settles is left alone, and so is the source") {
    World stuck;
    stuck.SourceBreaksAfter({ppn::types::v1::MIGRATION_PHASE_MEMORY},
                            [&] { stuck.source().PutVm("vm-1", VM_STATE_MIGRATING, /*migrated_out=*/true); });
    absl::StatusOr<MigrationProgress> left = stuck.Migrate();
    REQUIRE(left.ok());
    CHECK(left->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
    CHECK(left->message().find("outcome unknown: target laptop-b did not settle within 5m") != std::string::npos);
    CHECK(stuck.target().destroys() == 0);
    CHECK(stuck.target().Get("vm-1").has_value());
    CHECK(stuck.source().resumes() == 0);
    CHECK(stuck.clock.Now() >= absl::FromUnixSeconds(1795000000) + absl::Minutes(5));
  }
}

TEST_CASE("after a failed migration a copy the source left paused is resumed unless the target runs the guest",
          "[scheduler][migrator][regression]") {
  World w;
  bool restarting = false;
  SECTION("a source that answers at once") {}
  SECTION("a source whose agent is restarting") { restarting = true; }
  // The source's QEMU sent everything and paused, its agent died; the target lost the guest.
  w.SourceBreaksAfter({ppn::types::v1::MIGRATION_PHASE_SWITCHOVER}, [&] {
    w.source().PutVm("vm-1", VM_STATE_MIGRATING, /*migrated_out=*/true);
    if (!restarting) return;
    w.source().SetDown(true);
    w.source().OnList([&](int n) {
      if (n == 3) w.source().SetDown(false);
    });
  });
  w.TargetTurns(1, VM_STATE_FAILED);
  absl::StatusOr<MigrationProgress> r = w.Migrate();
  REQUIRE(r.ok());
  CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  CHECK(r->message().find("the guest runs again on laptop-a") != std::string::npos);
  CHECK(w.source().resumes() == 1);
  CHECK(w.source().Get("vm-1")->state() == VM_STATE_RUNNING);
  CHECK_FALSE(w.target().Get("vm-1").has_value());
  CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-a");
}

// Issue 15 item 14: with the fleet down when the copy completed, the move was never recorded.
TEST_CASE("RecordMigration is retried with backoff until the fleet takes it", "[scheduler][migrator][regression]") {
  World w;
  SECTION("the fleet comes back") {
    w.fleet.FailRecordMigration(absl::UnavailableError("connection refused"), 6);
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    REQUIRE(r.ok());
    CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
    CHECK(r->message() == "running on laptop-b");
    CHECK(w.fleet.record_calls() == 7);
    CHECK(w.fleet.Vm("vm-1").node_id() == "laptop-b");
    // 250 ms doubling to 5 s: 0.25 + 0.5 + 1 + 2 + 4 + 5.
    CHECK(w.clock.Now() - absl::FromUnixSeconds(1795000000) == absl::Milliseconds(12750));
    CHECK(w.migrations()[0].attributes().at("fleet_recorded") == "true");
  }
  SECTION("the fleet adopted the VM on the target meanwhile") {
    w.fleet.FailRecordMigration(absl::UnavailableError("connection refused"), 1);
    w.target().OnList([&](int) { w.fleet.MoveForTest("vm-1", "laptop-b"); });
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    REQUIRE(r.ok());
    CHECK(r->message() == "running on laptop-b");
    CHECK(w.fleet.record_calls() == 2);
  }
  SECTION("the fleet stays down past the bound: the move is reported, and the fleet adopts it later") {
    w.fleet.FailRecordMigration(absl::UnavailableError("connection refused"), 1000);
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    REQUIRE(r.ok());
    CHECK(r->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
    CHECK(r->message() == "running on laptop-b (not in the fleet's record yet: connection refused)");
    CHECK(w.clock.Now() - absl::FromUnixSeconds(1795000000) <= absl::Minutes(3));
    CHECK(w.migrations()[0].attributes().at("fleet_recorded") == "false");
  }
  SECTION("a refusal is not retried") {
    w.fleet.FailRecordMigration(absl::NotFoundError("vm vm-1 not found"), 1);
    absl::StatusOr<MigrationProgress> r = w.Migrate();
    REQUIRE(r.ok());
    CHECK(w.fleet.record_calls() == 1);
  }
}

TEST_CASE("a second migration of a VM already being migrated is ABORTED", "[scheduler][migrator]") {
  World w;
  absl::Status second;
  w.source().SetMigrateOut([&](const OutgoingMigration& m, const ProgressFn&) {
    second = w.migrator.Migrate({VmId("vm-1"), NodeId("laptop-b"), 0}, [](const MigrationProgress&) { return true; })
                 .status();
    MigrationProgress failed = Report(m, "laptop-a", ppn::types::v1::MIGRATION_PHASE_FAILED);
    return absl::StatusOr<MigrationProgress>(failed);
  });
  REQUIRE(w.Migrate().ok());
  CHECK(second.code() == absl::StatusCode::kAborted);
  CHECK(second.message() == "vm vm-1 is already being migrated");
  // Once it ended, the VM can be migrated again.
  w.source().SetMigrateOut(nullptr);
  CHECK(w.Migrate()->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
}

}  // namespace
}  // namespace ppn::scheduler
