// VmManager's state machine against a fake QEMU (fake processes, a canned QMP socket each):
// no QEMU, no gRPC. An agent "crash" is the VmManager object going away while its fake QEMU
// processes live on in the spawner, as real ones live on under setsid.

#include "host_agent/vm_manager.h"

#include <stdlib.h>

#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "common/sqlite.h"
#include "host_agent/qemu_launcher.h"
#include "host_agent/testing/fake_qemu.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_process_spawner.h"

namespace ppn::host {
namespace {

using ppn::host::v1::VmInstance;
using ppn::types::v1::VmSpec;

constexpr char kVm[] = "vm-1";

VmSpec Spec(uint32_t memory_mib = 128) {
  VmSpec spec;
  spec.set_display_name("web-one");
  spec.set_vcpus(1);
  spec.set_memory_mib(memory_mib);
  spec.set_image("ppn-test-guest");
  spec.add_port_forwards()->set_guest_port(80);
  spec.set_user_data("#cloud-config\n");
  return spec;
}

// A node: a short directory under /tmp (QMP socket paths are limited to 108 bytes), a store,
// fake QEMU, a fake clock, and the VmManager under test.
struct Node {
  std::string dir;
  ppn::testing::FakeProcessSpawner spawner;
  testing::FakeQemu qemu{&spawner};
  ppn::testing::FakeClock clock;
  std::unique_ptr<VmStore> store;
  std::unique_ptr<VmManager> manager;
  uint64_t disk_mib = 8192;

  Node() {
    char tmpl[] = "/tmp/ppnvm-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    REQUIRE(WriteFileAtomically(dir + "/base.qcow2", "base").ok());
    store = *VmStore::Open(dir + "/agent.db");
  }
  ~Node() {
    manager.reset();
    std::filesystem::remove_all(dir);
  }
  std::string state() const { return dir + "/state"; }
  std::string VmDir(const std::string& id) const { return state() + "/vms/" + id; }

  VmManager* Start() {
    VmManager::Options o;
    o.node_id = "laptop-a";
    o.state_dir = state();
    o.port_first = 23100;
    o.port_last = 23199;
    o.advertised_memory_mib = 4096;
    o.safety_margin_mib = 512;
    o.advertised_disk_mib = disk_mib;
    o.kvm_mode = KvmMode::kOff;
    o.qemu_user = "";
    o.use_cgroups = false;
    o.monitor_interval = absl::Hours(1);  // the test calls RunOnce()
    o.migration_poll_interval = absl::Milliseconds(1);
    ImageCatalog catalog =
        *ImageCatalog::Parse("{\"images\": {\"ppn-test-guest\": {\"base_image\": \"" + dir + "/base.qcow2\"}}}");
    manager = std::make_unique<VmManager>(o, catalog, VmManager::Deps{store.get(), &clock, &spawner});
    absl::Status started = manager->Start();
    INFO(started.message());
    REQUIRE(started.ok());
    return manager.get();
  }
  // The agent dies; its QEMU processes do not.
  void Crash() { manager.reset(); }
  VmManager* Restart() {
    Crash();
    return Start();
  }
  absl::StatusOr<VmInstance> Spawn(const std::string& id = kVm, const std::string& tenant = "acme",
                                   const VmSpec& spec = Spec()) {
    return manager->Spawn(VmId(id), TenantId(tenant), spec);
  }
  int QemuSpawns() {
    int n = 0;
    for (const SpawnSpec& s : spawner.spawned()) n += s.argv[0] == "qemu-system-x86_64";
    return n;
  }
  std::vector<StoredVm> Records() { return *store->LoadAll(); }
};

absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> Prepare(VmManager* m, absl::Duration ready_timeout) {
  ppn::host::v1::PrepareIncomingRequest req;
  req.set_vm_id(kVm);
  req.set_tenant_id("acme");
  *req.mutable_spec() = Spec();
  req.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
  req.mutable_ready_timeout()->set_seconds(absl::ToInt64Seconds(ready_timeout));
  return m->PrepareIncoming(req);
}

absl::StatusOr<ppn::types::v1::MigrationProgress> MigrateOut(
    VmManager* m, const ProgressFn& progress = [](const auto&) { return true; }) {
  ppn::host::v1::MigrateOutRequest req;
  req.set_vm_id(kVm);
  req.set_migration_uri("tcp:127.0.0.1:23999");
  req.set_target_node_id("laptop-b");
  return m->MigrateOut(req, progress);
}

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
  CHECK(stopped->state() == ppn::types::v1::VM_STATE_STOPPED);
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
