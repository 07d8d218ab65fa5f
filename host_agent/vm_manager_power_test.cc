// VmManager's power (stop, start, reboot) and console reads against a fake QEMU: what stays
// on disk, what memory and ports a stopped VM holds, what an agent restart makes of it.

#include <filesystem>

#include "catch2/catch.hpp"
#include "common/files.h"
#include "host_agent/testing/vm_manager_rig.h"
#include "host_agent/vm_manager.h"

namespace ppn::host {
namespace {

using ppn::host::v1::VmInstance;
using testing::kVm;
using testing::Node;

TEST_CASE("a stopped VM keeps its disk seed and ports and holds no memory; started it boots the same disk",
          "[host_agent][vm_manager][power]") {
  Node node;
  VmManager* m = node.Start();
  absl::StatusOr<VmInstance> vm = node.Spawn();
  REQUIRE(vm.ok());
  REQUIRE(vm->state() == ppn::types::v1::VM_STATE_RUNNING);
  const pid_t first_pid = vm->pid();
  const uint32_t port = vm->forwarded_ports(0).host_port();
  REQUIRE(WriteFileAtomically(node.VmDir(kVm) + "/disk.qcow2", "the guest's writes").ok());
  const uint64_t free_before = m->MakeHeartbeat().available_memory_mib();

  absl::StatusOr<VmInstance> stopped = m->Stop(kVm, absl::Seconds(1));
  INFO(stopped.status().message());
  REQUIRE(stopped.ok());
  CHECK(stopped->state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(stopped->state_message() == "powered off by its guest (ACPI)");
  CHECK(stopped->pid() == 0);
  CHECK_FALSE(stopped->has_ready_time());
  CHECK(node.qemu.CountAlive(kVm) == 0);
  CHECK(*ReadFile(node.VmDir(kVm) + "/disk.qcow2") == "the guest's writes");
  CHECK(std::filesystem::exists(node.VmDir(kVm) + "/seed.iso"));
  CHECK(stopped->forwarded_ports(0).host_port() == port);
  CHECK(m->MakeHeartbeat().available_memory_mib() == free_before + 128);
  CHECK(node.Records()[0].instance.state() == ppn::types::v1::VM_STATE_STOPPED);
  // Idempotent; and a stopped VM cannot be rebooted.
  CHECK(m->Stop(kVm, absl::Seconds(1))->state() == ppn::types::v1::VM_STATE_STOPPED);
  std::string how;
  CHECK(m->Reboot(kVm, absl::Seconds(1), &how).status().code() == absl::StatusCode::kFailedPrecondition);

  SECTION("an agent restart adopts it STOPPED: no QEMU, its port still its own") {
    m = node.Restart();
    REQUIRE(m->List().size() == 1);
    CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_STOPPED);
    CHECK(node.qemu.CountAlive(kVm) == 0);
    absl::StatusOr<VmInstance> other = node.Spawn("vm-2");
    REQUIRE(other.ok());
    CHECK(other->forwarded_ports(0).host_port() != port);
  }

  absl::StatusOr<VmInstance> started = m->StartStopped(kVm);
  INFO(started.status().message());
  REQUIRE(started.ok());
  CHECK(started->state() == ppn::types::v1::VM_STATE_STARTING);
  CHECK(started->pid() != first_pid);
  CHECK(*ReadFile(node.VmDir(kVm) + "/disk.qcow2") == "the guest's writes");  // booted, not made anew
  CHECK(started->forwarded_ports(0).host_port() == port);
  std::optional<VmInstance> running = node.WaitForState(kVm, ppn::types::v1::VM_STATE_RUNNING);
  REQUIRE(running.has_value());
  CHECK(running->has_ready_time());
  CHECK(m->StartStopped(kVm)->state() == ppn::types::v1::VM_STATE_RUNNING);  // idempotent

  // Destroying a stopped VM removes everything.
  REQUIRE(m->Stop(kVm, absl::Seconds(1)).ok());
  REQUIRE(m->Destroy(kVm, absl::Seconds(1)).ok());
  CHECK_FALSE(std::filesystem::exists(node.VmDir(kVm)));
}

TEST_CASE("a stop kills a guest that ignores the ACPI power-off after the grace period and says so",
          "[host_agent][vm_manager][power]") {
  Node node;
  VmManager* m = node.Start();
  REQUIRE(node.Spawn().ok());
  node.qemu.SetRunState(kVm, "paused");  // the fake guest then ignores the power button
  absl::StatusOr<VmInstance> stopped = m->Stop(kVm, absl::Milliseconds(100));
  REQUIRE(stopped.ok());
  CHECK(stopped->state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(stopped->state_message() == "killed: the guest did not power off within 100ms");
  CHECK(node.qemu.CountAlive(kVm) == 0);
}

TEST_CASE("a reboot powers the guest off and boots it again, or resets one that does not power off",
          "[host_agent][vm_manager][power]") {
  Node node;
  VmManager* m = node.Start();
  absl::StatusOr<VmInstance> vm = node.Spawn();
  REQUIRE(vm.ok());
  std::string how;
  SECTION("ACPI") {
    absl::StatusOr<VmInstance> rebooted = m->Reboot(kVm, absl::Seconds(2), &how);
    INFO(rebooted.status().message());
    REQUIRE(rebooted.ok());
    CHECK(how == "the guest powered off (ACPI) and booted again");
    CHECK(rebooted->pid() != vm->pid());
    CHECK(node.qemu.Resets(kVm) == 0);
  }
  SECTION("reset") {
    node.qemu.SetRunState(kVm, "paused");
    absl::StatusOr<VmInstance> rebooted = m->Reboot(kVm, absl::Milliseconds(100), &how);
    REQUIRE(rebooted.ok());
    CHECK(how == "reset (QMP system_reset): the guest did not power off within 100ms");
    CHECK(rebooted->pid() == vm->pid());
    CHECK(node.qemu.Resets(kVm) == 1);
  }
  CHECK(node.qemu.CountAlive(kVm) == 1);
  CHECK(node.WaitForState(kVm, ppn::types::v1::VM_STATE_RUNNING).has_value());  // STARTING until ready again
}

TEST_CASE("console reads are bounded and return the next offset; only this node's VMs",
          "[host_agent][vm_manager][console]") {
  Node node;
  VmManager* m = node.Start();
  REQUIRE(node.Spawn().ok());
  REQUIRE(WriteFileAtomically(node.VmDir(kVm) + "/console.log", "PPN-GUEST-BOOTED\n\x1b[2Jhostile\n").ok());
  uint64_t next = 0;
  CHECK(*m->ReadConsole(kVm, 0, 4, &next) == "PPN-");
  CHECK(next == 4);
  CHECK(*m->ReadConsole(kVm, 4, 1 << 20, &next) == "GUEST-BOOTED\n\x1b[2Jhostile\n");
  CHECK(next == 29);
  CHECK(m->ReadConsole(kVm, next, 1 << 20, &next)->empty());
  CHECK(next == 29);
  // Past the end (the log began again): from its end.
  CHECK(m->ReadConsole(kVm, 1000, 10, &next)->empty());
  CHECK(next == 29);
  CHECK(m->ReadConsole("vm-other", 0, 10, &next).status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ppn::host
