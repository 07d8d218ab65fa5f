#include "host_agent/adoption.h"

#include "catch2/catch.hpp"

namespace ppn::host {
namespace {

using ppn::types::v1::VmState;

StoredVm Record(VmState state, uint32_t migration_port = 0) {
  StoredVm rec;
  rec.instance.set_vm_id("vm-1");
  rec.instance.set_state(state);
  rec.migration_port = migration_port;
  return rec;
}

FoundQemu Qemu(const std::string& run_state, const std::string& migration = "") {
  return FoundQemu{true, true, run_state, migration};
}

TEST_CASE("a spawn that never answered is adopted if its QEMU runs and forgotten if not", "[host_agent][adoption]") {
  Adoption a = DecideAdoption(Record(ppn::types::v1::VM_STATE_PENDING), Qemu("running"));
  CHECK_FALSE(a.remove);
  CHECK(a.state == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(DecideAdoption(Record(ppn::types::v1::VM_STATE_PENDING), FoundQemu{}).remove);
}

TEST_CASE("a running VM whose QEMU vanished is FAILED, not forgotten", "[host_agent][adoption]") {
  Adoption a = DecideAdoption(Record(ppn::types::v1::VM_STATE_RUNNING), FoundQemu{});
  CHECK_FALSE(a.remove);
  CHECK(a.state == ppn::types::v1::VM_STATE_FAILED);
  CHECK(a.state_message == "the QEMU process ended while the agent was down");
  CHECK(DecideAdoption(Record(ppn::types::v1::VM_STATE_STOPPING), FoundQemu{}).remove);
}

TEST_CASE("a copy paused after migrating out is MIGRATING and migrated out, never RUNNING", "[host_agent][adoption]") {
  for (const FoundQemu& found : {Qemu("postmigrate", "completed"), Qemu("paused", "completed")}) {
    Adoption a = DecideAdoption(Record(ppn::types::v1::VM_STATE_RUNNING), found);
    CHECK(a.state == ppn::types::v1::VM_STATE_MIGRATING);
    CHECK(a.migrated_out);
    CHECK(a.state_message == "paused after migrating out");
    CHECK_FALSE(a.cont);
  }
}

TEST_CASE("a guest paused by a migration that did not complete runs again", "[host_agent][adoption]") {
  for (const char* migration : {"failed", "cancelled", ""}) {
    Adoption a = DecideAdoption(Record(ppn::types::v1::VM_STATE_MIGRATING), Qemu("paused", migration));
    CHECK(a.state == ppn::types::v1::VM_STATE_RUNNING);
    CHECK(a.cont);
    CHECK_FALSE(a.migrated_out);
  }
}

TEST_CASE("an incoming target is kept while it waits, RUNNING once arrived, removed when it failed",
          "[host_agent][adoption]") {
  StoredVm target = Record(ppn::types::v1::VM_STATE_MIGRATING, 20005);
  Adoption waiting = DecideAdoption(target, Qemu("inmigrate"));
  CHECK(waiting.incoming);
  CHECK(waiting.state == ppn::types::v1::VM_STATE_MIGRATING);
  Adoption arrived = DecideAdoption(target, Qemu("running"));
  CHECK_FALSE(arrived.incoming);
  CHECK(arrived.state == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(DecideAdoption(target, Qemu("inmigrate", "failed")).remove);
  CHECK(DecideAdoption(target, FoundQemu{}).remove);
  CHECK(DecideAdoption(Record(ppn::types::v1::VM_STATE_PENDING, 20005), FoundQemu{}).remove);
}

TEST_CASE("a QEMU that does not answer QMP is kept as FAILED so a destroy can end it", "[host_agent][adoption]") {
  Adoption a = DecideAdoption(Record(ppn::types::v1::VM_STATE_RUNNING), FoundQemu{true, false, "", ""});
  CHECK_FALSE(a.remove);
  CHECK(a.state == ppn::types::v1::VM_STATE_FAILED);
  Adoption odd = DecideAdoption(Record(ppn::types::v1::VM_STATE_RUNNING), Qemu("guest-panicked"));
  CHECK(odd.state == ppn::types::v1::VM_STATE_FAILED);
  CHECK(odd.state_message == "QEMU reports guest-panicked");
}

TEST_CASE("a create caught restoring its template is removed, never run with the template's identity",
          "[host_agent][adoption]") {
  CHECK(DecideAdoption(Record(ppn::types::v1::VM_STATE_PENDING), Qemu("inmigrate")).remove);
  CHECK(DecideAdoption(Record(ppn::types::v1::VM_STATE_PENDING), Qemu("paused")).remove);
  // A restored VM that was RUNNING is adopted like any other.
  Adoption a = DecideAdoption(Record(ppn::types::v1::VM_STATE_RUNNING), Qemu("running"));
  CHECK_FALSE(a.remove);
  CHECK(a.state == ppn::types::v1::VM_STATE_RUNNING);
}

}  // namespace
}  // namespace ppn::host
