// VmManager's migration half against a fake QEMU: incoming targets, outgoing migrations,
// paused copies.

#include "host_agent/vm_manager.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "host_agent/testing/vm_manager_rig.h"

namespace ppn::host {
namespace {

using ppn::host::v1::VmInstance;
using testing::kVm;
using testing::MigrateOut;
using testing::Node;
using testing::Prepare;
using testing::Spec;

TEST_CASE("a prepared target that receives nothing within its ready timeout removes itself",
          "[host_agent][vm_manager][incoming]") {
  Node node;
  VmManager* m = node.Start();
  absl::Duration timeout = absl::Seconds(30);
  SECTION("a timeout asked for") {}
  SECTION("the default") { timeout = absl::ZeroDuration(); }
  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> prepared = Prepare(m, timeout);
  REQUIRE(prepared.ok());
  CHECK(absl::StartsWith(prepared->migration_uri(), "tcp:127.0.0.1:231"));
  REQUIRE(m->List().size() == 1);
  CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_MIGRATING);
  absl::Duration wait = timeout == absl::ZeroDuration() ? absl::Seconds(60) : timeout;
  node.clock.Advance(wait - absl::Seconds(1));
  m->RunOnce();
  CHECK(m->List().size() == 1);
  node.clock.Advance(absl::Seconds(2));
  m->RunOnce();
  CHECK(m->List().empty());
  CHECK(node.qemu.CountAlive(kVm) == 0);
  CHECK(node.Records().empty());
  CHECK_FALSE(std::filesystem::exists(node.VmDir(kVm)));
  CHECK(Prepare(m, timeout).ok());  // its ports and id are free again
}

TEST_CASE("a target that receives a stream is kept past its deadline, runs when it arrives, and goes when it fails",
          "[host_agent][vm_manager][incoming]") {
  Node node;
  VmManager* m = node.Start();
  REQUIRE(Prepare(m, absl::Seconds(10)).ok());
  node.qemu.IncomingConnected(kVm);
  node.clock.Advance(absl::Seconds(20));
  m->RunOnce();
  REQUIRE(m->List().size() == 1);
  SECTION("arrives") {
    node.qemu.IncomingCompleted(kVm);
    REQUIRE(m->List().size() == 1);
    CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_RUNNING);
    CHECK(node.Records()[0].migration_port == 0);
  }
  SECTION("fails: QEMU exits") {
    node.spawner.Exit(node.qemu.Pid(kVm));
    m->RunOnce();
    CHECK(m->List().empty());
    CHECK(node.Records().empty());
    CHECK_FALSE(std::filesystem::exists(node.VmDir(kVm)));
  }
  SECTION("a second PrepareIncoming does not replace a target that is receiving") {
    absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> again = Prepare(m, absl::Seconds(10));
    CHECK(again.status().code() == absl::StatusCode::kAlreadyExists);
    CHECK(again.status().message() == "vm vm-1 is already receiving a migration on node laptop-a");
  }
}

TEST_CASE("PrepareIncoming over a target that is only waiting replaces it", "[host_agent][vm_manager][incoming]") {
  Node node;
  VmManager* m = node.Start();
  REQUIRE(Prepare(m, absl::Seconds(60)).ok());
  pid_t first = node.qemu.Pid(kVm);
  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> again = Prepare(m, absl::Seconds(60));
  REQUIRE(again.ok());
  CHECK_FALSE(node.spawner.IsAlive(first));
  CHECK(node.qemu.CountAlive(kVm) == 1);
  CHECK(m->List().size() == 1);
  ppn::host::v1::PrepareIncomingRequest bad;
  bad.set_vm_id("vm-2");
  bad.set_tenant_id("acme");
  *bad.mutable_spec() = Spec();
  bad.mutable_ready_timeout()->set_seconds(-5);
  CHECK(m->PrepareIncoming(bad).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(node.Spawn(kVm).status().code() == absl::StatusCode::kAlreadyExists);  // a target is no spawn
}

TEST_CASE("a completed outgoing migration stops and removes the source", "[host_agent][vm_manager][migration]") {
  Node node;
  VmManager* m = node.Start();
  REQUIRE(node.Spawn().ok());
  int reports = 0;
  absl::StatusOr<ppn::types::v1::MigrationProgress> done = MigrateOut(m, [&](const auto&) {
    ++reports;
    return true;
  });
  REQUIRE(done.ok());
  CHECK(done->phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(reports == 1);
  CHECK(node.qemu.CountAlive(kVm) == 0);
  CHECK(m->List().empty());
  CHECK(node.Records().empty());
}

TEST_CASE("after a failed outgoing migration the source guest runs again", "[host_agent][vm_manager][migration]") {
  Node node;
  VmManager* m = node.Start();
  REQUIRE(node.Spawn().ok());
  node.qemu.ScriptMigration(kVm, {{{"status", "active"}}, {{"status", "failed"}, {"error-desc", "target went away"}}});
  absl::StatusOr<ppn::types::v1::MigrationProgress> done = MigrateOut(m, [&](const auto&) {
    node.qemu.SetRunState(kVm, "paused");  // QEMU stopped the guest for the switchover
    return true;
  });
  REQUIRE(done.ok());
  CHECK(done->phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  CHECK(done->message() == "target went away");
  CHECK(node.qemu.RunState(kVm) == "running");
  REQUIRE(m->List().size() == 1);
  CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(node.qemu.CountAlive(kVm) == 1);
}

TEST_CASE("a copy paused after migrating out is re-adopted as MIGRATING and ResumeVm continues it",
          "[host_agent][vm_manager][migration][crash]") {
  Node node;
  node.Start();
  REQUIRE(node.Spawn().ok());
  CHECK(node.manager->ResumeVm(kVm).status().code() == absl::StatusCode::kFailedPrecondition);
  // The agent died after QEMU completed the migration, before it quit the source.
  node.qemu.SetRunState(kVm, "postmigrate");
  VmManager* m = node.Restart();
  ppn::host::v1::Heartbeat hb = m->MakeHeartbeat();
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).state() == ppn::types::v1::VM_STATE_MIGRATING);
  CHECK(hb.vms(0).migrated_out());
  CHECK(hb.vms(0).state_message() == "paused after migrating out");
  m->RunOnce();  // the monitor leaves it alone
  CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_MIGRATING);

  SECTION("a destroy does not wait for a paused guest to power down") {
    absl::Time t0 = absl::Now();
    REQUIRE(m->Destroy(kVm, absl::ZeroDuration()).ok());
    CHECK(absl::Now() - t0 < absl::Seconds(5));  // not the 10 s default grace
    CHECK(node.qemu.CountAlive(kVm) == 0);
    return;
  }

  absl::StatusOr<VmInstance> resumed = m->ResumeVm(kVm);
  REQUIRE(resumed.ok());
  CHECK(resumed->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK_FALSE(resumed->migrated_out());
  CHECK(node.qemu.RunState(kVm) == "running");
  CHECK(node.Records()[0].instance.state() == ppn::types::v1::VM_STATE_RUNNING);
  absl::StatusOr<VmInstance> twice = m->ResumeVm(kVm);
  CHECK(twice.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(twice.status().message() == "vm vm-1 is not paused (QEMU is running)");
  CHECK(m->ResumeVm("vm-none").status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("an outgoing migration nobody follows after a crash is cancelled and the guest continues",
          "[host_agent][vm_manager][migration][crash]") {
  Node node;
  node.Start();
  REQUIRE(node.Spawn().ok());
  node.qemu.SetMigrationStatus(kVm, "active");
  node.qemu.SetRunState(kVm, "paused");
  VmManager* m = node.Restart();
  REQUIRE(m->List().size() == 1);
  CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(node.qemu.RunState(kVm) == "running");
  std::vector<std::string> commands = node.qemu.Qmp(kVm)->commands();
  CHECK(std::find(commands.begin(), commands.end(), "migrate_cancel") != commands.end());
}

}  // namespace
}  // namespace ppn::host
