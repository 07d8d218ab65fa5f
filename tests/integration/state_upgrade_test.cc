// Upgrades keep state: state directories as release 0.3 (packaging/VERSION at commit 9894fe6,
// the first packaged release) wrote them are opened by this code, which migrates them forward
// and loses nothing. The old state is made here from that release's own schema statements and
// row formats, copied verbatim (a fixture generated at test time, never a checked-in database);
// a store whose schema changes must add its old form below.

#include <map>
#include <tuple>

#include "catch2/catch.hpp"
#include "common/sqlite.h"
#include "fleet/private_networks.h"
#include "fleet/vm_store.h"
#include "google/protobuf/util/message_differencer.h"
#include "host_agent/vm_store.h"
#include "tests/harness/temp_dir.h"

namespace ppn {
namespace {

using google::protobuf::util::MessageDifferencer;

// fleet/vm_store.cc at 9894fe6: schema version 3.
const std::vector<std::string> kFleetSchema03 = {
    "CREATE TABLE vms (vm_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, request_id TEXT NOT NULL, "
    "record BLOB NOT NULL); CREATE INDEX vms_tenant ON vms (tenant_id, vm_id);",
    "ALTER TABLE vms ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE vms ADD COLUMN relay_ports TEXT NOT NULL DEFAULT ''",
};

// host_agent/vm_store.cc at 9894fe6: schema version 1.
const std::vector<std::string> kAgentSchema03 = {
    "CREATE TABLE vms (vm_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, record BLOB NOT NULL, "
    "migration_port INTEGER NOT NULL DEFAULT 0)",
};

ppn::fleet::v1::VmRecord FleetRecord(const std::string& id, const std::string& tenant) {
  ppn::fleet::v1::VmRecord r;
  r.set_vm_id(id);
  r.set_tenant_id(tenant);
  r.set_node_id("laptop-a");
  r.set_request_id("req-" + id);
  // RUNNING: a state every release reads the same way.
  r.set_state(ppn::types::v1::VM_STATE_RUNNING);
  r.mutable_spec()->set_image("ppn-test-guest");
  r.mutable_spec()->set_memory_mib(256);
  r.mutable_spec()->set_vcpus(1);
  auto* f = r.mutable_spec()->add_port_forwards();
  f->set_guest_port(80);
  f->set_protocol(ppn::types::v1::PROTOCOL_TCP);
  return r;
}

TEST_CASE("a fleet registry written by release 0.3 opens with every VM its fingerprint and relay ports",
          "[upgrade][fleet]") {
  ppn::testing::TempDir dir;
  const std::string path = dir.File("fleet.db");
  const ppn::fleet::v1::VmRecord one = FleetRecord("vm-one", "acme"), two = FleetRecord("vm-two", "globex");
  {
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
    REQUIRE(db.ok());
    REQUIRE((*db)->Migrate(kFleetSchema03).ok());
    // VmStore::Put at 9894fe6, relay ports in FormatRelayPorts's text.
    for (const auto& [r, fingerprint, relay] :
         {std::make_tuple(one, std::string("fp-one"), std::string("tcp/80=40001")),
          std::make_tuple(two, std::string(""), std::string(""))}) {
      absl::StatusOr<Statement> stmt = (*db)->Prepare(
          "INSERT OR REPLACE INTO vms (vm_id, tenant_id, request_id, record, fingerprint, relay_ports) "
          "VALUES (?, ?, ?, ?, ?, ?)");
      REQUIRE(stmt.ok());
      REQUIRE(stmt->Bind(1, r.vm_id())
                  .Bind(2, r.tenant_id())
                  .Bind(3, r.request_id())
                  .BindBlob(4, r.SerializeAsString())
                  .Bind(5, fingerprint)
                  .Bind(6, relay)
                  .Run()
                  .ok());
    }
    REQUIRE((*db)->SchemaVersion().value_or(-1) == 3);
  }

  absl::StatusOr<std::unique_ptr<ppn::fleet::VmStore>> store = ppn::fleet::VmStore::Open(path);
  INFO(store.status().message());
  REQUIRE(store.ok());
  absl::StatusOr<std::vector<ppn::fleet::StoredVm>> vms = (*store)->LoadAll();
  INFO(vms.status().message());
  REQUIRE(vms.ok());
  REQUIRE(vms->size() == 2);
  std::map<std::string, ppn::fleet::StoredVm> by_id;
  for (const auto& vm : *vms) by_id[vm.record.vm_id()] = vm;
  CHECK(MessageDifferencer::Equals(by_id["vm-one"].record, one));
  CHECK(MessageDifferencer::Equals(by_id["vm-two"].record, two));
  CHECK(by_id["vm-one"].fingerprint == "fp-one");
  CHECK(by_id["vm-two"].fingerprint.empty());
  REQUIRE(by_id["vm-one"].relay_ports.size() == 1);
  CHECK(by_id["vm-one"].relay_ports[0].guest_port == 80);
  CHECK(by_id["vm-one"].relay_ports[0].public_port == 40001);
  CHECK(by_id["vm-two"].relay_ports.empty());
  // What 0.3 did not have works on the migrated registry, and survives a reopen.
  REQUIRE((*store)->PutNetwork({"net-1", "acme", "backend", 3, 1764633600}).ok());
  store->reset();
  store = ppn::fleet::VmStore::Open(path);
  REQUIRE(store.ok());
  absl::StatusOr<std::vector<ppn::fleet::StoredNetwork>> nets = (*store)->LoadNetworks();
  REQUIRE(nets.ok());
  REQUIRE(nets->size() == 1);
  CHECK((*nets)[0].index == 3);
  CHECK((*store)->LoadAll().value_or(std::vector<ppn::fleet::StoredVm>{}).size() == 2);
}

TEST_CASE("a host agent's VM store written by release 0.3 opens with every VM and its pending migration",
          "[upgrade][host_agent]") {
  ppn::testing::TempDir dir;
  const std::string path = dir.File("vms.db");
  ppn::host::v1::VmInstance vm;
  vm.set_vm_id("vm-one");
  vm.set_tenant_id("acme");
  vm.set_state(ppn::types::v1::VM_STATE_MIGRATING);
  vm.mutable_spec()->set_image("ppn-test-guest");
  vm.mutable_spec()->set_memory_mib(256);
  auto* nic = vm.add_private_nics();
  nic->set_network_id("net-1");
  nic->set_address("10.214.0.2");
  nic->set_prefix_length(24);
  nic->set_mac("02:00:00:00:00:02");
  {
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
    REQUIRE(db.ok());
    REQUIRE((*db)->Migrate(kAgentSchema03).ok());
    absl::StatusOr<Statement> stmt =
        (*db)->Prepare("INSERT OR REPLACE INTO vms (vm_id, tenant_id, record, migration_port) VALUES (?, ?, ?, ?)");
    REQUIRE(stmt.ok());
    REQUIRE(stmt->Bind(1, vm.vm_id())
                .Bind(2, vm.tenant_id())
                .BindBlob(3, vm.SerializeAsString())
                .Bind(4, 21007)
                .Run()
                .ok());
  }
  absl::StatusOr<std::unique_ptr<ppn::host::VmStore>> store = ppn::host::VmStore::Open(path);
  INFO(store.status().message());
  REQUIRE(store.ok());
  absl::StatusOr<std::vector<ppn::host::StoredVm>> vms = (*store)->LoadAll();
  REQUIRE(vms.ok());
  REQUIRE(vms->size() == 1);
  CHECK(MessageDifferencer::Equals((*vms)[0].instance, vm));
  CHECK((*vms)[0].migration_port == 21007);
}

}  // namespace
}  // namespace ppn
