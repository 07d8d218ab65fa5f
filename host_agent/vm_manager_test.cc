// VmManager's lifecycle against a fake QEMU (fake processes, a canned QMP socket each): no
// QEMU, no gRPC.

#include "host_agent/vm_manager.h"

#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "common/sqlite.h"
#include "host_agent/qemu_launcher.h"
#include "host_agent/testing/vm_manager_rig.h"

namespace ppn::host {
namespace {

using ppn::host::v1::VmInstance;
using ppn::types::v1::VmSpec;
using testing::kVm;
using testing::Node;
using testing::Spec;

TEST_CASE("a spawned VM runs, is reported and leaves nothing when destroyed", "[host_agent][vm_manager]") {
  Node node;
  VmManager* m = node.Start();
  absl::StatusOr<VmInstance> vm = node.Spawn();
  INFO(vm.status().message());
  REQUIRE(vm.ok());
  CHECK(vm->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(vm->pid() == node.qemu.Pid(kVm));
  CHECK(vm->spec().user_data().empty());
  REQUIRE(vm->forwarded_ports_size() == 1);
  CHECK(vm->forwarded_ports(0).host_port() >= 23100);
  CHECK(vm->console_log_path() == node.VmDir(kVm) + "/console.log");
  REQUIRE(node.Records().size() == 1);
  CHECK(node.Records()[0].instance.state() == ppn::types::v1::VM_STATE_RUNNING);

  ppn::host::v1::Heartbeat hb = m->MakeHeartbeat();
  REQUIRE(hb.vms_size() == 1);
  REQUIRE(hb.images_size() == 1);
  CHECK(hb.images(0) == "ppn-test-guest");
  CHECK(hb.disk_total_mib() == 8192);
  CHECK(hb.disk_available_mib() == 8192 - 1024);  // the overlay may grow to the image's 1 GiB

  uint64_t memory = 0;
  CHECK(*m->SetBalloon(kVm, 96) == 96);
  CHECK(*m->GetBalloon(kVm, &memory) == 96);
  CHECK(memory == 128);

  absl::StatusOr<VmInstance> stopped = m->Destroy(kVm, absl::Seconds(1));
  REQUIRE(stopped.ok());
  CHECK(stopped->state() == ppn::types::v1::VM_STATE_DESTROYED);
  CHECK(node.qemu.CountAlive(kVm) == 0);
  CHECK_FALSE(std::filesystem::exists(node.VmDir(kVm)));
  CHECK(node.Records().empty());
  CHECK(m->List().empty());
  CHECK(m->Destroy(kVm, absl::Seconds(1)).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a spawn is recorded before its QEMU is exec'd and adopted after a crash, never started twice",
          "[host_agent][vm_manager][crash]") {
  Node node;
  node.Start();
  std::vector<StoredVm> at_exec;
  node.qemu.OnExec([&](const std::string&, pid_t) { at_exec = node.Records(); });
  REQUIRE(node.Spawn().ok());
  REQUIRE(at_exec.size() == 1);
  CHECK(at_exec[0].instance.vm_id() == kVm);
  CHECK(at_exec[0].instance.state() == ppn::types::v1::VM_STATE_PENDING);
  CHECK(at_exec[0].instance.spec().image() == "ppn-test-guest");
  CHECK(at_exec[0].instance.spec().user_data().empty());
  pid_t pid = node.qemu.Pid(kVm);

  // The agent dies between the exec and its answer: the store holds only the intent.
  node.Crash();
  node.store = *VmStore::Open(node.dir + "/after-crash.db");
  REQUIRE(node.store->Put(at_exec[0]).ok());
  VmManager* m = node.Start();
  std::vector<VmInstance> vms = m->List();
  REQUIRE(vms.size() == 1);
  CHECK(vms[0].state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(vms[0].pid() == pid);
  CHECK(node.Records()[0].instance.state() == ppn::types::v1::VM_STATE_RUNNING);

  // The fleet's retry gets the adopted VM, not a second QEMU.
  absl::StatusOr<VmInstance> again = node.Spawn();
  REQUIRE(again.ok());
  CHECK(again->pid() == pid);
  CHECK(node.QemuSpawns() == 1);
  CHECK(node.qemu.CountAlive(kVm) == 1);
  REQUIRE(m->Destroy(kVm, absl::Seconds(1)).ok());
  CHECK(node.qemu.CountAlive(kVm) == 0);
}

TEST_CASE("a QEMU of this state directory without a record is killed at start", "[host_agent][vm_manager][crash]") {
  Node node;
  LaunchSpec orphan;
  orphan.vm_id = "vm-orphan";
  orphan.vm_dir = node.VmDir("vm-orphan");
  pid_t pid = node.spawner.AddProcess(BuildQemuArgs(orphan));
  LaunchSpec elsewhere = orphan;
  elsewhere.vm_dir = "/elsewhere/vms/vm-orphan";
  pid_t foreign = node.spawner.AddProcess(BuildQemuArgs(elsewhere));
  std::filesystem::create_directories(node.VmDir("vm-orphan"));
  VmManager* m = node.Start();
  CHECK_FALSE(node.spawner.IsAlive(pid));
  CHECK(node.spawner.IsAlive(foreign));  // another agent's
  CHECK_FALSE(std::filesystem::exists(node.VmDir("vm-orphan")));
  CHECK(m->List().empty());
}

TEST_CASE("a spawn never execs a second QEMU for a VM id that has one", "[host_agent][vm_manager][crash]") {
  Node node;
  VmManager* m = node.Start();
  // A QEMU for vm-1 appears that this agent does not know (another agent on the same state
  // directory, say): the spawn touches nothing of it.
  LaunchSpec other;
  other.vm_id = kVm;
  other.vm_dir = node.VmDir(kVm);
  pid_t pid = node.spawner.AddProcess(BuildQemuArgs(other));
  std::filesystem::create_directories(node.VmDir(kVm));
  REQUIRE(WriteFileAtomically(node.VmDir(kVm) + "/disk.qcow2", "theirs").ok());
  absl::StatusOr<VmInstance> vm = node.Spawn();
  CHECK(vm.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(vm.status().message() == "a QEMU process for vm vm-1 is already running (pid " + std::to_string(pid) + ")");
  CHECK(node.QemuSpawns() == 0);
  CHECK(node.spawner.IsAlive(pid));
  CHECK(ReadFile(node.VmDir(kVm) + "/disk.qcow2").value_or("") == "theirs");
  CHECK(m->List().empty());
  CHECK(node.Records().empty());
}

TEST_CASE("of two QEMUs for one VM id only the recorded one is kept", "[host_agent][vm_manager][crash]") {
  Node node;
  node.Start();
  REQUIRE(node.Spawn().ok());
  pid_t pid = node.qemu.Pid(kVm);
  LaunchSpec twin;
  twin.vm_id = kVm;
  twin.vm_dir = node.VmDir(kVm);
  pid_t second = node.spawner.AddProcess(BuildQemuArgs(twin));
  VmManager* m = node.Restart();
  CHECK(node.spawner.IsAlive(pid));
  CHECK_FALSE(node.spawner.IsAlive(second));
  REQUIRE(m->List().size() == 1);
  CHECK(m->List()[0].pid() == pid);
}

TEST_CASE("a recorded spawn whose QEMU never ran is forgotten at start", "[host_agent][vm_manager][crash]") {
  Node node;
  StoredVm pending;
  pending.instance.set_vm_id(kVm);
  pending.instance.set_tenant_id("acme");
  pending.instance.set_state(ppn::types::v1::VM_STATE_PENDING);
  *pending.instance.mutable_spec() = Spec();
  REQUIRE(node.store->Put(pending).ok());
  std::filesystem::create_directories(node.VmDir(kVm));
  VmManager* m = node.Start();
  CHECK(m->List().empty());
  CHECK(node.Records().empty());
  CHECK_FALSE(std::filesystem::exists(node.VmDir(kVm)));
  REQUIRE(node.Spawn().ok());  // and the id can be spawned
}

TEST_CASE("spawn is idempotent for one tenant and spec and refuses anything else", "[host_agent][vm_manager]") {
  Node node;
  node.Start();
  SECTION("concurrent spawns of one id start one QEMU") {
    node.qemu.OnExec([](const std::string&, pid_t) { absl::SleepFor(absl::Milliseconds(200)); });
    absl::StatusOr<VmInstance> first;
    std::thread t([&] { first = node.Spawn(); });
    absl::SleepFor(absl::Milliseconds(50));
    absl::StatusOr<VmInstance> second = node.Spawn();
    t.join();
    REQUIRE(first.ok());
    REQUIRE(second.ok());
    CHECK(first->pid() == second->pid());
    CHECK(node.QemuSpawns() == 1);
  }
  SECTION("another tenant, another spec") {
    REQUIRE(node.Spawn().ok());
    absl::StatusOr<VmInstance> other = node.Spawn(kVm, "globex");
    CHECK(other.status().code() == absl::StatusCode::kAlreadyExists);
    CHECK(other.status().message() == "vm vm-1 already exists on node laptop-a");
    CHECK(node.Spawn(kVm, "acme", Spec(64)).status().code() == absl::StatusCode::kAlreadyExists);
    VmSpec same = Spec();
    same.set_user_data("#cloud-config\n# not compared: never stored\n");
    CHECK(node.Spawn(kVm, "acme", same).ok());
    CHECK(node.QemuSpawns() == 1);
  }
  SECTION("a VM that failed is not passed off as spawned") {
    REQUIRE(node.Spawn().ok());
    node.spawner.Exit(node.qemu.Pid(kVm));
    node.manager->RunOnce();
    absl::StatusOr<VmInstance> again = node.Spawn();
    CHECK(again.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(again.status().message() == "vm vm-1 is VM_STATE_FAILED on node laptop-a; destroy it first");
  }
}

TEST_CASE("a failed store write fails the spawn and leaves nothing", "[host_agent][vm_manager][store]") {
  Node node;
  VmManager* m = node.Start();
  std::unique_ptr<Database> db = *Database::Open(node.dir + "/agent.db");
  SECTION("the intent cannot be written: nothing runs") {
    REQUIRE(
        db->Exec("CREATE TRIGGER broken BEFORE INSERT ON vms BEGIN SELECT RAISE(FAIL, 'disk I/O error'); END").ok());
    absl::StatusOr<VmInstance> vm = node.Spawn();
    CHECK_FALSE(vm.ok());
    CHECK(absl::StrContains(vm.status().message(), "disk I/O error"));
    CHECK(node.QemuSpawns() == 0);
  }
  SECTION("the running record cannot be written: the spawn is undone") {
    REQUIRE(db->Exec("CREATE TRIGGER broken BEFORE INSERT ON vms WHEN EXISTS (SELECT 1 FROM vms WHERE vm_id = "
                     "NEW.vm_id) BEGIN SELECT RAISE(FAIL, 'disk I/O error'); END")
                .ok());
    absl::StatusOr<VmInstance> vm = node.Spawn();
    CHECK_FALSE(vm.ok());
    CHECK(absl::StrContains(vm.status().message(), "disk I/O error"));
    CHECK(node.QemuSpawns() == 1);
    CHECK(node.qemu.CountAlive(kVm) == 0);
  }
  CHECK(m->List().empty());
  CHECK(node.Records().empty());
  CHECK_FALSE(std::filesystem::exists(node.VmDir(kVm)));
  REQUIRE(db->Exec("DROP TRIGGER broken").ok());
  CHECK(node.Spawn().ok());
}

TEST_CASE("a QEMU that will not start leaves nothing and says why", "[host_agent][vm_manager]") {
  Node node;
  VmManager* m = node.Start();
  node.qemu.FailNextStart("qemu-system-x86_64: could not load kernel");
  absl::StatusOr<VmInstance> vm = node.Spawn();
  CHECK(vm.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(vm.status().message() == "QEMU did not start VM vm-1: qemu-system-x86_64: could not load kernel");
  CHECK(m->List().empty());
  CHECK(node.Records().empty());
  CHECK_FALSE(std::filesystem::exists(node.VmDir(kVm)));
  CHECK(node.Spawn(kVm, "acme", VmSpec()).status().code() == absl::StatusCode::kInvalidArgument);
  VmSpec unknown = Spec();
  unknown.set_image("no-such-image");
  CHECK(node.Spawn(kVm, "acme", unknown).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a disk that cannot fit on the node is refused", "[host_agent][vm_manager][disk]") {
  Node node;
  node.disk_mib = 4096;
  VmManager* m = node.Start();
  VmSpec big = Spec();
  big.set_disk_gib(5);
  absl::StatusOr<VmInstance> vm = node.Spawn(kVm, "acme", big);
  CHECK(vm.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(vm.status().message() == "node laptop-a has 4096 MiB of disk available for VMs; the VM's disk needs 5120 MiB");
  CHECK(node.QemuSpawns() == 0);
  VmSpec fits = Spec();
  fits.set_disk_gib(3);
  REQUIRE(node.Spawn(kVm, "acme", fits).ok());
  CHECK(m->MakeHeartbeat().disk_available_mib() <= 1024);
  CHECK(node.Spawn("vm-2", "acme", fits).status().code() == absl::StatusCode::kResourceExhausted);
}

TEST_CASE("a VM whose QEMU dies is reported FAILED", "[host_agent][vm_manager]") {
  Node node;
  VmManager* m = node.Start();
  REQUIRE(node.Spawn().ok());
  node.spawner.Exit(node.qemu.Pid(kVm));
  m->RunOnce();
  REQUIRE(m->List().size() == 1);
  CHECK(m->List()[0].state() == ppn::types::v1::VM_STATE_FAILED);
  CHECK(absl::StartsWith(m->List()[0].state_message(), "QEMU exited unexpectedly"));
  CHECK(node.Records()[0].instance.state() == ppn::types::v1::VM_STATE_FAILED);
  REQUIRE(m->Destroy(kVm, absl::Seconds(1)).ok());
}

}  // namespace
}  // namespace ppn::host

namespace ppn::host {
namespace {

TEST_CASE("a balloon's memory shows in the heartbeat as the VM's and as the node's reclaimed memory",
          "[host_agent][vm_manager][balloon]") {
  testing::Node node;
  VmManager* m = node.Start();
  REQUIRE(node.Spawn().ok());
  CHECK(m->MakeHeartbeat().reclaimed_memory_mib() == 0);
  REQUIRE(*m->SetBalloon(testing::kVm, 96) == 96);
  ppn::host::v1::Heartbeat hb = m->MakeHeartbeat();
  CHECK(hb.reclaimed_memory_mib() == 32);
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).memory().actual_mib() == 96);
  CHECK(hb.vms(0).memory().balloon_target_mib() == 96);
  CHECK(hb.vms(0).memory().max_mib() == 128);
  CHECK(hb.vms(0).memory().size_mib() == 0);  // no virtio-mem
}

TEST_CASE("a VM resizes only within memory_mib and max_memory_mib, and only with max_memory_mib",
          "[host_agent][vm_manager][resize]") {
  testing::Node node;
  VmManager* m = node.Start();
  CHECK(m->ResizeVm("vm-nowhere", 256).status().code() == absl::StatusCode::kNotFound);
  REQUIRE(node.Spawn().ok());
  absl::StatusOr<VmInstance> fixed = m->ResizeVm(testing::kVm, 256);
  CHECK(fixed.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(fixed.status().message() == "vm vm-1 was created without max_memory_mib: it cannot change size while it runs");

  VmSpec growable = testing::Spec(128);
  growable.set_max_memory_mib(512);
  REQUIRE(node.Spawn("vm-2", "acme", growable).ok());
  CHECK(m->ResizeVm("vm-2", 514).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(m->ResizeVm("vm-2", 64).status().code() == absl::StatusCode::kInvalidArgument);
  absl::StatusOr<VmInstance> odd = m->ResizeVm("vm-2", 129);
  CHECK(odd.status().message() == "memory_mib must be 128-512 MiB (128 plus a multiple of 2)");
  // It holds its maximum on the node, so that growing never finds the node full.
  ppn::host::v1::Heartbeat hb = m->MakeHeartbeat();
  CHECK(hb.total_memory_mib() - hb.safety_margin_mib() - hb.available_memory_mib() == 128 + 512);
}

}  // namespace
}  // namespace ppn::host
