// VmManager's readiness (docs/guest-channel.md) against a fake QEMU whose fake guest says
// PPN-READY on its channel, or not: STARTING until then, RUNNING with ready_time after, the
// boot timeout, restores and restarts.

#include "catch2/catch.hpp"
#include "host_agent/testing/vm_manager_rig.h"
#include "host_agent/vm_manager.h"

namespace ppn::host {
namespace {

using ppn::host::v1::VmInstance;
using testing::kVm;
using testing::Node;

absl::Time TimeOf(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

TEST_CASE("a booted VM is STARTING until its guest says PPN-READY then RUNNING with its ready time",
          "[host_agent][vm_manager][readiness]") {
  Node node;
  VmManager* m = node.Start();
  uint64_t before = m->version();
  absl::StatusOr<VmInstance> vm = node.SpawnStarting();
  REQUIRE(vm.ok());
  CHECK(vm->state() == ppn::types::v1::VM_STATE_STARTING);
  CHECK_FALSE(vm->has_ready_time());
  node.clock.Advance(absl::Milliseconds(1500));  // the guest boots
  std::optional<VmInstance> ready = node.WaitForState(kVm, ppn::types::v1::VM_STATE_RUNNING);
  REQUIRE(ready.has_value());
  CHECK(ready->has_ready_time());
  CHECK(TimeOf(ready->ready_time()) >= TimeOf(ready->start_time()));
  CHECK(ready->boot_duration().seconds() >= 0);
  CHECK(m->version() > before);  // heartbeats follow the change at once
  REQUIRE(node.Records().size() == 1);
  CHECK(node.Records()[0].instance.state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(node.Records()[0].instance.has_ready_time());

  // An agent restart keeps a RUNNING VM RUNNING, ready time and all.
  node.Restart();
  std::vector<VmInstance> after = node.manager->List();
  REQUIRE(after.size() == 1);
  CHECK(after[0].state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(after[0].ready_time().seconds() == ready->ready_time().seconds());
}

TEST_CASE("a guest that never says it is ready stays STARTING until the boot timeout then runs saying so",
          "[host_agent][vm_manager][readiness]") {
  Node node;
  node.qemu.set_guests_say_ready(false);
  VmManager* m = node.Start();
  REQUIRE(node.SpawnStarting().ok());
  CHECK_FALSE(node.WaitForState(kVm, ppn::types::v1::VM_STATE_RUNNING, absl::Milliseconds(300)).has_value());
  CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_STARTING);

  // The agent restarts while it boots: it is still STARTING, and watched again.
  m = node.Restart();
  REQUIRE(m->List().size() == 1);
  CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_STARTING);

  node.clock.Advance(absl::Minutes(5) + absl::Seconds(1));
  std::optional<VmInstance> ran = node.WaitForState(kVm, ppn::types::v1::VM_STATE_RUNNING);
  REQUIRE(ran.has_value());
  CHECK(ran->state_message() == "the guest gave no sign of being ready within 5m (docs/guest-channel.md)");
  CHECK(ran->boot_duration().seconds() >= 300);
}

TEST_CASE("a spawn asked again while its guest boots returns the STARTING instance",
          "[host_agent][vm_manager][readiness]") {
  Node node;
  node.qemu.set_guests_say_ready(false);
  node.Start();
  REQUIRE(node.SpawnStarting().ok());
  absl::StatusOr<VmInstance> again = node.SpawnStarting();
  REQUIRE(again.ok());
  CHECK(again->state() == ppn::types::v1::VM_STATE_STARTING);
  CHECK(node.QemuSpawns() == 1);
}

TEST_CASE("a create restored from a template is RUNNING when it answers",
          "[host_agent][vm_manager][readiness][templates]") {
  Node node;
  node.templates = true;
  VmManager* m = node.Start();
  REQUIRE(m->EnsureTemplate("ppn-test-guest", 1, 128).ok());
  absl::StatusOr<VmInstance> vm = node.SpawnStarting();
  REQUIRE(vm.ok());
  INFO(vm->state_message());
  CHECK(vm->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(vm->has_ready_time());
  CHECK(vm->boot_duration().seconds() == 0);
}

}  // namespace
}  // namespace ppn::host
