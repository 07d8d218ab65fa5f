#include "fleet/vm_store.h"

#include "catch2/catch.hpp"
#include "common/sqlite.h"
#include "tests/harness/temp_dir.h"

namespace ppn::fleet {
namespace {

TEST_CASE("a registry written before fingerprints were kept migrates and keeps its request ids", "[fleet][store]") {
  ppn::testing::TempDir dir;
  {
    // Schema version 1, as the first fleet wrote it.
    auto db = *Database::Open(dir.File("fleet.db"));
    REQUIRE(db->Migrate({"CREATE TABLE vms (vm_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, request_id TEXT NOT NULL, "
                         "record BLOB NOT NULL); CREATE INDEX vms_tenant ON vms (tenant_id, vm_id);"})
                .ok());
    ppn::fleet::v1::VmRecord old;
    old.set_vm_id("vm-1");
    old.set_tenant_id("acme");
    auto insert = *db->Prepare("INSERT INTO vms (vm_id, tenant_id, request_id, record) VALUES (?, ?, ?, ?)");
    REQUIRE(insert.Bind(1, "vm-1").Bind(2, "acme").Bind(3, "req-1").BindBlob(4, old.SerializeAsString()).Run().ok());
  }
  auto store = *VmStore::Open(dir.File("fleet.db"));
  auto loaded = *store->LoadAll();
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].record.request_id() == "req-1");
  CHECK(loaded[0].fingerprint.empty());

  loaded[0].fingerprint = "ab12";
  REQUIRE(store->Put(loaded[0]).ok());
  store.reset();
  auto again = *(*VmStore::Open(dir.File("fleet.db")))->LoadAll();
  CHECK(again[0].fingerprint == "ab12");
  CHECK(again[0].record.request_id() == "req-1");
}

TEST_CASE("a registry written when STOPPED meant destroyed reads those VMs as DESTROYED once", "[fleet][store]") {
  ppn::testing::TempDir dir;
  {
    // Schema version 5, the last one before VM_STATE_DESTROYED.
    auto db = *Database::Open(dir.File("fleet.db"));
    REQUIRE(db->Migrate({"CREATE TABLE vms (vm_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, request_id TEXT NOT NULL, "
                         "record BLOB NOT NULL); CREATE INDEX vms_tenant ON vms (tenant_id, vm_id);",
                         "ALTER TABLE vms ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''",
                         "ALTER TABLE vms ADD COLUMN relay_ports TEXT NOT NULL DEFAULT ''",
                         "CREATE TABLE networks (network_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT "
                         "NULL, pool_index INTEGER NOT NULL, create_time INTEGER NOT NULL)"})
                .ok());
    auto insert = *db->Prepare("INSERT INTO vms (vm_id, tenant_id, request_id, record) VALUES (?, ?, ?, ?)");
    ppn::fleet::v1::VmRecord gone, runs;
    gone.set_vm_id("vm-gone");
    gone.set_state(ppn::types::v1::VM_STATE_STOPPED);
    runs.set_vm_id("vm-runs");
    runs.set_state(ppn::types::v1::VM_STATE_RUNNING);
    REQUIRE(insert.Bind(1, "vm-gone").Bind(2, "acme").Bind(3, "").BindBlob(4, gone.SerializeAsString()).Run().ok());
    auto insert2 = *db->Prepare("INSERT INTO vms (vm_id, tenant_id, request_id, record) VALUES (?, ?, ?, ?)");
    REQUIRE(insert2.Bind(1, "vm-runs").Bind(2, "acme").Bind(3, "").BindBlob(4, runs.SerializeAsString()).Run().ok());
  }
  auto store = *VmStore::Open(dir.File("fleet.db"));
  auto loaded = *store->LoadAll();
  REQUIRE(loaded.size() == 2);
  for (const StoredVm& vm : loaded) {
    CHECK(vm.record.state() ==
          (vm.record.vm_id() == "vm-gone" ? ppn::types::v1::VM_STATE_DESTROYED : ppn::types::v1::VM_STATE_RUNNING));
  }

  // Once: a VM stopped (powered off) after the change stays STOPPED across reopening.
  StoredVm stopped;
  stopped.record.set_vm_id("vm-off");
  stopped.record.set_tenant_id("acme");
  stopped.record.set_state(ppn::types::v1::VM_STATE_STOPPED);
  REQUIRE(store->Put(stopped).ok());
  store.reset();
  std::unique_ptr<VmStore> reopened = *VmStore::Open(dir.File("fleet.db"));
  std::vector<StoredVm> again = *reopened->LoadAll();
  REQUIRE(again.size() == 3);
  for (const StoredVm& vm : again) {
    if (vm.record.vm_id() == "vm-off") CHECK(vm.record.state() == ppn::types::v1::VM_STATE_STOPPED);
    if (vm.record.vm_id() == "vm-gone") CHECK(vm.record.state() == ppn::types::v1::VM_STATE_DESTROYED);
  }
}

TEST_CASE("a VM's relay ports are stored with its record and a corrupt entry is DATA_LOSS", "[fleet][store][relay]") {
  ppn::testing::TempDir dir;
  {
    auto store = *VmStore::Open(dir.File("fleet.db"));
    StoredVm vm;
    vm.record.set_vm_id("vm-1");
    vm.record.set_tenant_id("acme");
    vm.relay_ports = {{ppn::types::v1::PROTOCOL_TCP, 80, 30000}, {ppn::types::v1::PROTOCOL_UDP, 53, 30001}};
    REQUIRE(store->Put(vm).ok());
  }
  auto loaded = *(*VmStore::Open(dir.File("fleet.db")))->LoadAll();
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].relay_ports ==
        std::vector<RelayPort>{{ppn::types::v1::PROTOCOL_TCP, 80, 30000}, {ppn::types::v1::PROTOCOL_UDP, 53, 30001}});
  {
    auto db = *Database::Open(dir.File("fleet.db"));
    REQUIRE((*db->Prepare("UPDATE vms SET relay_ports = 'tcp/80=x'")).Run().ok());
  }
  auto corrupt = (*VmStore::Open(dir.File("fleet.db")))->LoadAll();
  CHECK(corrupt.status().code() == absl::StatusCode::kDataLoss);
  CHECK(corrupt.status().message() == "VM record vm-1: bad relay port \"tcp/80=x\" (want tcp|udp/GUEST=PUBLIC)");
}

TEST_CASE("private networks are stored, survive a reopen and go when deleted", "[fleet][store][private_networks]") {
  ppn::testing::TempDir dir;
  {
    auto store = *VmStore::Open(dir.File("fleet.db"));
    REQUIRE(store->PutNetwork({"net-a", "acme", "backend", 3, 100}).ok());
    REQUIRE(store->PutNetwork({"net-b", "globex", "web", 4, 101}).ok());
    REQUIRE(store->DeleteNetwork("net-b").ok());
  }
  auto store = *VmStore::Open(dir.File("fleet.db"));
  std::vector<StoredNetwork> loaded = *store->LoadNetworks();
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].network_id == "net-a");
  CHECK(loaded[0].tenant_id == "acme");
  CHECK(loaded[0].name == "backend");
  CHECK(loaded[0].index == 3);
  CHECK(loaded[0].create_unix_seconds == 100);
}

}  // namespace
}  // namespace ppn::fleet
