#pragma once

// A node for VmManager tests: a short directory under /tmp (QMP socket paths are limited to
// 108 bytes), a store, fake QEMU on a fake spawner, a fake clock, and the VmManager under
// test. An agent "crash" is the VmManager object going away while its fake QEMU processes
// live on in the spawner, as real ones live on under setsid.

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "common/files.h"
#include "host_agent/migration_channel.h"
#include "host_agent/testing/fake_qemu.h"
#include "host_agent/vm_manager.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_process_spawner.h"

namespace ppn::host::testing {

using ppn::host::v1::VmInstance;
using ppn::types::v1::VmSpec;

inline constexpr char kVm[] = "vm-1";

inline VmSpec Spec(uint32_t memory_mib = 128) {
  VmSpec spec;
  spec.set_display_name("web-one");
  spec.set_vcpus(1);
  spec.set_memory_mib(memory_mib);
  spec.set_image("ppn-test-guest");
  spec.add_port_forwards()->set_guest_port(80);
  spec.set_user_data("#cloud-config\n");
  return spec;
}

// One node; Start() makes its VmManager, Crash() drops it, Restart() does both.
struct Node {
  std::string dir;
  ppn::testing::FakeProcessSpawner spawner;
  FakeQemu qemu{&spawner};
  ppn::testing::FakeClock clock;
  std::unique_ptr<VmStore> store;
  std::unique_ptr<VmManager> manager;
  uint64_t disk_mib = 8192;
  bool templates = false;  // off unless a test is about them: every create is then one QEMU

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
    o.templates = templates;
    o.template_ready_timeout = absl::Milliseconds(500);
    o.identity_timeout = absl::Seconds(2);
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
  // The spawn's answer (a booted VM is STARTING).
  absl::StatusOr<VmInstance> SpawnStarting(const std::string& id = kVm, const std::string& tenant = "acme",
                                           const VmSpec& spec = Spec()) {
    return manager->Spawn(VmId(id), TenantId(tenant), spec);
  }
  // A spawn and, for a booted VM whose fake guest says PPN-READY, the wait until it is RUNNING
  // (bounded): what most tests need before they go on.
  absl::StatusOr<VmInstance> Spawn(const std::string& id = kVm, const std::string& tenant = "acme",
                                   const VmSpec& spec = Spec()) {
    absl::StatusOr<VmInstance> vm = SpawnStarting(id, tenant, spec);
    if (!vm.ok() || vm->state() != ppn::types::v1::VM_STATE_STARTING) return vm;
    return WaitForState(id, ppn::types::v1::VM_STATE_RUNNING).value_or(*vm);
  }
  // vm `id` as List() shows it once it is in `state`, or nullopt after `within`.
  std::optional<VmInstance> WaitForState(const std::string& id, ppn::types::v1::VmState state,
                                         absl::Duration within = absl::Seconds(5)) {
    absl::Time end = absl::Now() + within;
    while (absl::Now() < end) {
      for (const VmInstance& vm : manager->List()) {
        if (vm.vm_id() == id && vm.state() == state) return vm;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return std::nullopt;
  }
  int QemuSpawns() {
    int n = 0;
    for (const SpawnSpec& s : spawner.spawned()) n += s.argv[0] == "qemu-system-x86_64";
    return n;
  }
  std::vector<StoredVm> Records() { return *store->LoadAll(); }
};

inline absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> Prepare(VmManager* m, absl::Duration ready_timeout) {
  ppn::host::v1::PrepareIncomingRequest req;
  req.set_vm_id(kVm);
  req.set_tenant_id("acme");
  *req.mutable_spec() = Spec();
  req.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
  req.mutable_ready_timeout()->set_seconds(absl::ToInt64Seconds(ready_timeout));
  return m->PrepareIncoming(req);
}

// A target agent's migration listener for MigrateOut to connect to (the fake QEMU sends
// nothing on it); it takes the ticket `kTicket`.
inline const std::string kTicket(kMigrationTicketBytes, 't');
struct TargetListener {
  IncomingGate gate{[](const std::string&, int fd) { close(fd); }};
  TargetListener() { REQUIRE(gate.Open(kVm, "127.0.0.1", 23999, kTicket).ok()); }
};

inline absl::StatusOr<ppn::types::v1::MigrationProgress> MigrateOut(
    VmManager* m, const ProgressFn& progress = [](const auto&) { return true; }) {
  TargetListener target;
  ppn::host::v1::MigrateOutRequest req;
  req.set_vm_id(kVm);
  req.set_migration_uri("tcp:127.0.0.1:23999");
  req.set_migration_ticket(kTicket);
  req.set_target_node_id("laptop-b");
  return m->MigrateOut(req, progress);
}

}  // namespace ppn::host::testing
