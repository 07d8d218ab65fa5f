// FleetCore's power calls (stop, start, reboot), console reads and readiness waits on fake
// agents: the state machine of a record, the ledger, and what a tenant may not do.

#include <algorithm>
#include <thread>

#include "catch2/catch.hpp"
#include "fleet/fleet_core.h"
#include "fleet/testing/core_fixture.h"

namespace ppn::fleet {
namespace {

using testing::Beat;
using testing::CoreFixture;
using testing::Spec;

TEST_CASE("a stopped VM keeps its node and record; started again it boots there; each is a ledger entry",
          "[fleet][power]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string id = vm->vm.vm_id();

  absl::StatusOr<ppn::fleet::v1::VmRecord> stopped =
      f.core->StopVm(Scope{"acme"}, id, absl::Seconds(5), Actor::Tenant());
  INFO(stopped.status().message());
  REQUIRE(stopped.ok());
  CHECK(stopped->state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(stopped->node_id() == "a");
  CHECK(f.Get(id).state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(f.agents.memory()["a"] == 0);  // the node holds no memory for it
  // Listed without include_stopped (that means destroyed ones).
  CHECK(f.core->ListVms(Scope{"acme"}, {})->vms_size() == 1);
  // Idempotent, and refused when it makes no sense.
  CHECK(f.core->StopVm(Scope{"acme"}, id, absl::ZeroDuration(), Actor::Tenant())->state() ==
        ppn::types::v1::VM_STATE_STOPPED);
  std::string how;
  absl::Status reboot = f.core->RebootVm(Scope{"acme"}, id, absl::ZeroDuration(), Actor::Tenant(), &how).status();
  CHECK(reboot.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(reboot.message() == "vm " + id + " is STOPPED; only a running VM can be rebooted");
  // Another tenant's VM does not exist for it.
  absl::Status foreign = f.core->StopVm(Scope{"globex"}, id, absl::ZeroDuration(), Actor::Tenant()).status();
  CHECK(foreign.code() == absl::StatusCode::kNotFound);
  CHECK(foreign.message() == "vm " + id + " not found");

  absl::StatusOr<ppn::fleet::v1::VmRecord> started = f.core->StartVm(Scope{"acme"}, id, Actor::Tenant());
  REQUIRE(started.ok());
  CHECK(started->state() == ppn::types::v1::VM_STATE_STARTING);
  CHECK(started->node_id() == "a");
  CHECK(f.agents.calls().back() == "StartVm a " + id);

  absl::StatusOr<ppn::fleet::v1::VmRecord> rebooted =
      f.core->RebootVm(Scope{}, id, absl::Seconds(1), Actor::Operator(), &how);
  REQUIRE(rebooted.ok());
  CHECK(how == "the guest powered off (ACPI) and booted again");

  std::vector<std::string> ledger = f.Ledger({"who", "node", "how"});
  CHECK(std::count(ledger.begin(), ledger.end(), "vm.stop " + id + " who=tenant node=a") == 1);
  CHECK(std::count(ledger.begin(), ledger.end(), "vm.start " + id + " who=tenant node=a") == 1);
  CHECK(std::count(ledger.begin(), ledger.end(),
                   "vm.reboot " + id + " who=operator node=a how=the guest powered off (ACPI) and booted again") == 1);
}

TEST_CASE("a stopped VM whose node is gone is not started elsewhere: its disk is there", "[fleet][power]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000), Beat("b", 4000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string id = vm->vm.vm_id();
  const std::string node = vm->vm.node_id();
  REQUIRE(f.core->StopVm(Scope{"acme"}, id, absl::ZeroDuration(), Actor::Tenant()).ok());
  // Its node falls silent.
  f.clock.Advance(absl::Seconds(5));
  f.core->OnHeartbeat(Beat(node == "a" ? "b" : "a", 4000));
  f.core->RunOnce();
  absl::Status s = f.core->StartVm(Scope{"acme"}, id, Actor::Tenant()).status();
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.message() == "vm " + id + " cannot start: its node " + node +
                           " is gone; its disk is there, nowhere else: start it once the node is back, or destroy it");
  for (const std::string& call : f.agents.calls()) CHECK(call.rfind("StartVm", 0) != 0);
  // And it can still be destroyed at once.
  CHECK(f.core->DestroyVm(Scope{"acme"}, id, Actor::Tenant())->state() == ppn::types::v1::VM_STATE_DESTROYED);
}

TEST_CASE("console output comes from the VM's node; a destroyed or foreign VM's is NOT_FOUND alike",
          "[fleet][console]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string id = vm->vm.vm_id();
  f.agents.SetConsole(id, "PPN-GUEST-BOOTED\nPPN-GUEST-READY\n");
  auto out = f.core->GetConsoleOutput(Scope{"acme"}, id, 4, 12);
  REQUIRE(out.ok());
  CHECK(out->data() == "GUEST-BOOTED");
  CHECK(out->next_offset() == 16);
  absl::Status foreign = f.core->GetConsoleOutput(Scope{"globex"}, id, 0, 10).status();
  absl::Status absent = f.core->GetConsoleOutput(Scope{"globex"}, "vm-nope", 0, 10).status();
  CHECK(foreign.code() == absl::StatusCode::kNotFound);
  CHECK(foreign.message() == "vm " + id + " not found");
  CHECK(absent.message() == "vm vm-nope not found");
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, id, Actor::Tenant()).ok());
  CHECK(f.core->GetConsoleOutput(Scope{"acme"}, id, 0, 10).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("waiting for readiness ends RUNNING, or DEADLINE_EXCEEDED with the VM left STARTING", "[fleet][readiness]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string id = vm->vm.vm_id();
  // The node says it boots.
  f.core->OnHeartbeat(
      testing::With(Beat("a", 3744), {testing::Running(id, "acme", ppn::types::v1::VM_STATE_STARTING)}));
  REQUIRE(f.Get(id).state() == ppn::types::v1::VM_STATE_STARTING);
  absl::Status late = f.core->WaitForReady(Scope{"acme"}, id, absl::Now() + absl::Milliseconds(50)).status();
  CHECK(late.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(late.message() == "vm " + id + " is not ready yet (STARTING); it stays: follow it with WatchVm or GetVm");
  CHECK(f.Get(id).state() == ppn::types::v1::VM_STATE_STARTING);

  // The guest becomes ready while a create waits.
  ppn::host::v1::VmInstance ready = testing::Running(id, "acme");
  ready.mutable_ready_time()->set_seconds(1700000000);
  ready.mutable_boot_duration()->set_seconds(3);
  std::thread beat([&] {
    absl::SleepFor(absl::Milliseconds(50));
    f.core->OnHeartbeat(testing::With(Beat("a", 3744), {ready}));
  });
  absl::StatusOr<ppn::fleet::v1::VmRecord> waited =
      f.core->WaitForReady(Scope{"acme"}, id, absl::Now() + absl::Seconds(10));
  beat.join();
  REQUIRE(waited.ok());
  CHECK(waited->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(waited->ready_time().seconds() == 1700000000);
  CHECK(waited->boot_duration().seconds() == 3);
}

}  // namespace
}  // namespace ppn::fleet
