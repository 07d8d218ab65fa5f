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

// A VM on node "a" (of "a" and "b"), stopped; then "a" falls silent.
struct StoppedOnGoneNode {
  CoreFixture f;
  std::string id;
  // `stop`: false leaves it running when "a" falls silent (UNKNOWN).
  explicit StoppedOnGoneNode(bool stop = true) {
    f.Nodes({Beat("a", 4000)});
    auto vm = f.core->CreateVm("acme", Spec("web"), "", "web");
    if (!vm.ok()) std::abort();
    id = vm->vm.vm_id();
    f.Nodes({Beat("b", 4000)});
    if (stop && !f.core->StopVm(Scope{"acme"}, id, absl::ZeroDuration(), Actor::Tenant()).ok()) std::abort();
    f.clock.Advance(absl::Seconds(5));
    f.core->OnHeartbeat(Beat("b", 4000));
    f.core->RunOnce();
  }
  size_t Count(const std::string& call) {
    std::vector<std::string> calls = f.agents.calls();
    return std::count(calls.begin(), calls.end(), call);
  }
};

TEST_CASE("a stopped VM whose node is gone is not started elsewhere unless asked: the words say how",
          "[fleet][power]") {
  StoppedOnGoneNode t;
  absl::Status s = t.f.core->StartVm(Scope{"acme"}, t.id, Actor::Tenant()).status();
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.message() == "vm " + t.id +
                           " cannot start: its node a is gone; its disk is there, nowhere else: start it once the "
                           "node is back, destroy it, or start it with fresh_disk to boot it on another node from "
                           "its image (its disk stays behind)");
  for (const std::string& call : t.f.agents.calls()) CHECK(call.rfind("StartVm", 0) != 0);
  CHECK(t.Count("SpawnVm b " + t.id) == 0);
  CHECK(t.f.Get(t.id).node_id() == "a");
  // And it can still be destroyed at once.
  CHECK(t.f.core->DestroyVm(Scope{"acme"}, t.id, Actor::Tenant())->state() == ppn::types::v1::VM_STATE_DESTROYED);
}

TEST_CASE("with fresh_disk a VM whose node is gone boots on another node with the same id, name and NICs",
          "[fleet][power]") {
  bool stopped = GENERATE(true, false);  // STOPPED, or UNKNOWN (it ran when its node fell silent)
  StoppedOnGoneNode t(stopped);
  REQUIRE(t.f.Get(t.id).state() == ppn::types::v1::VM_STATE_UNKNOWN);  // its node's fate shows, either way
  absl::StatusOr<ppn::fleet::v1::VmRecord> started =
      t.f.core->StartVm(Scope{"acme"}, "web", Actor::Tenant(), /*fresh_disk=*/true);
  INFO(started.status().message());
  REQUIRE(started.ok());
  CHECK(started->vm_id() == t.id);
  CHECK(started->name() == "web");
  CHECK(started->node_id() == "b");
  CHECK(started->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(started->forwarded_ports_size() == 1);
  CHECK(started->left_behind_node_ids_size() == 1);
  CHECK(t.Count("SpawnVm b " + t.id) == 1);
  CHECK(t.f.Get(t.id).node_id() == "b");
  CHECK(t.f.Reserved("b") == 256);  // as for a create: until b reports it
  t.f.core->OnHeartbeat(testing::With(Beat("b", 3744), {testing::Running(t.id, "acme")}));
  CHECK(t.f.Reserved("b") == 0);
  std::vector<std::string> ledger = t.f.Ledger({"who", "fresh_disk", "from_node", "to_node"});
  CHECK(std::count(ledger.begin(), ledger.end(),
                   "vm.start " + t.id + " who=tenant fresh_disk=true from_node=a to_node=b") == 1);
  // Durable: a restarted fleet has it on b.
  t.f.Open();
  CHECK(t.f.core->GetVm(Scope{"acme"}, t.id)->node_id() == "b");
}

TEST_CASE("a returning node's stale copy of a VM started elsewhere is destroyed and never takes the record back",
          "[fleet][power][reconciler]") {
  auto stopped = GENERATE(true, false);
  StoppedOnGoneNode t;
  REQUIRE(t.f.core->StartVm(Scope{"acme"}, t.id, Actor::Tenant(), /*fresh_disk=*/true).ok());
  // "a" comes back: with the copy it had (stopped), or running (it was only partitioned off).
  ppn::types::v1::VmState old_state = stopped ? ppn::types::v1::VM_STATE_STOPPED : ppn::types::v1::VM_STATE_RUNNING;
  // Two of its heartbeats before b's first since the spawn: without R0 the second would
  // adopt a's running copy (R6), and nothing would ever destroy a stopped one.
  for (int beat = 0; beat < 2; ++beat) {
    t.f.clock.Advance(absl::Milliseconds(300));
    t.f.core->OnHeartbeat(testing::With(Beat("a", 4000), {testing::Running(t.id, "acme", old_state)}));
    t.f.core->RunOnce();
    CHECK(t.f.Get(t.id).node_id() == "b");
  }
  t.f.core->OnHeartbeat(testing::With(Beat("b", 3744), {testing::Running(t.id, "acme")}));
  t.f.core->RunOnce();
  CHECK(t.f.Get(t.id).node_id() == "b");
  CHECK(t.f.Get(t.id).state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(t.Count("DestroyVm a " + t.id) >= 1);
  CHECK(t.Count("DestroyVm b " + t.id) == 0);
  // Destroyed there: a leaves the list.
  CHECK(t.f.Get(t.id).left_behind_node_ids_size() == 0);
  std::vector<std::string> kinds = t.f.Kinds();
  CHECK(std::count(kinds.begin(), kinds.end(), "vm.adopt") == 0);
}

TEST_CASE("fresh_disk is ignored while the VM's node is alive: it starts there with its disk", "[fleet][power]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string id = vm->vm.vm_id();
  f.Nodes({Beat("b", 4000)});
  REQUIRE(f.core->StopVm(Scope{"acme"}, id, absl::ZeroDuration(), Actor::Tenant()).ok());
  absl::StatusOr<ppn::fleet::v1::VmRecord> started =
      f.core->StartVm(Scope{"acme"}, id, Actor::Tenant(), /*fresh_disk=*/true);
  REQUIRE(started.ok());
  CHECK(started->node_id() == "a");
  CHECK(started->left_behind_node_ids_size() == 0);
  CHECK(f.agents.calls().back() == "StartVm a " + id);
  std::vector<std::string> calls = f.agents.calls();
  CHECK(std::count(calls.begin(), calls.end(), "SpawnVm a " + id) == 1);  // the create's only
}

TEST_CASE("with fresh_disk and no room elsewhere the start is RESOURCE_EXHAUSTED and the VM stays as it was",
          "[fleet][power]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000), Beat("b", 100)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  REQUIRE(vm->vm.node_id() == "a");
  const std::string id = vm->vm.vm_id();
  REQUIRE(f.core->StopVm(Scope{"acme"}, id, absl::ZeroDuration(), Actor::Tenant()).ok());
  f.clock.Advance(absl::Seconds(5));
  f.core->OnHeartbeat(Beat("b", 100));
  f.core->RunOnce();
  absl::Status s = f.core->StartVm(Scope{"acme"}, id, Actor::Tenant(), /*fresh_disk=*/true).status();
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK(ShortageOf(s) == Shortage::kMemory);
  CHECK(f.Get(id).node_id() == "a");
  CHECK(f.Get(id).left_behind_node_ids_size() == 0);
  CHECK(f.Reserved("b") == 0);
}

TEST_CASE("a failed fresh-disk spawn leaves the VM on its old node as it was", "[fleet][power]") {
  StoppedOnGoneNode t;
  t.f.agents.FailNode("b", absl::InternalError("qemu: boom"));
  absl::Status s = t.f.core->StartVm(Scope{"acme"}, t.id, Actor::Tenant(), /*fresh_disk=*/true).status();
  CHECK(s.code() == absl::StatusCode::kInternal);
  ppn::fleet::v1::VmRecord r = t.f.Get(t.id);
  CHECK(r.node_id() == "a");
  CHECK(r.left_behind_node_ids_size() == 0);
  CHECK(t.f.Reserved("b") == 0);
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
