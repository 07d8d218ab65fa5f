// Cordons: a cordoned node takes no new VM and no incoming migration (the placement the
// scheduler asks for), keeps what runs there, stays cordoned across a fleet restart, and each
// change is one ledger entry.

#include <algorithm>

#include "catch2/catch.hpp"
#include "fleet/fleet_core.h"
#include "fleet/testing/core_fixture.h"

namespace ppn::fleet {
namespace {

using testing::Beat;
using testing::CoreFixture;
using testing::Spec;

TEST_CASE("a cordoned node takes no new VM until it is uncordoned, across a restart", "[fleet][cordon]") {
  CoreFixture f;
  f.Nodes({Beat("big", 4000), Beat("small", 1000)});
  auto first = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(first.ok());
  REQUIRE(first->vm.node_id() == "big");

  absl::StatusOr<v1::Node> cordoned = f.core->SetCordon("big", true, "disk replacement", "operator");
  REQUIRE(cordoned.ok());
  CHECK(cordoned->cordoned());
  CHECK(cordoned->cordon_reason() == "disk replacement");
  auto second = f.core->CreateVm("acme", Spec("db"), "");
  REQUIRE(second.ok());
  CHECK(second->vm.node_id() == "small");
  CHECK(f.Get(first->vm.vm_id()).node_id() == "big");  // what runs there stays

  // Incoming migrations: the scheduler asks the fleet's placement, which says why not.
  Decision d = f.core->Explain(Spec("moving"), {"small"});
  CHECK(d.chosen_node_id.empty());
  REQUIRE(d.verdicts.size() == 2);
  for (const Verdict& v : d.verdicts) {
    if (v.node_id == "big") CHECK(v.reason == "cordoned");
  }

  f.Open();  // a restarted fleet still refuses the node
  f.Nodes({Beat("big", 4000), Beat("small", 1000)});
  CHECK(f.core->Explain(Spec("again"), {"small"}).chosen_node_id.empty());
  bool listed = false;
  for (const auto& n : f.core->ListNodes()) listed = listed || (n.node_id() == "big" && n.cordoned());
  CHECK(listed);

  REQUIRE(f.core->SetCordon("big", false, "", "operator").ok());
  CHECK(f.core->Explain(Spec("again"), {"small"}).chosen_node_id == "big");
  std::vector<std::string> node_entries;
  for (const std::string& line : f.Ledger({"role", "reason"})) {
    if (line.rfind("node.", 0) == 0) node_entries.push_back(line);
  }
  CHECK(node_entries == std::vector<std::string>{"node.cordon big role=operator reason=disk replacement",
                                                 "node.uncordon big role=operator"});
}

TEST_CASE("cordoning an unknown node or with a bad reason changes nothing", "[fleet][cordon]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000)});
  absl::StatusOr<v1::Node> unknown = f.core->SetCordon("nope", true, "x", "operator");
  CHECK(unknown.status().code() == absl::StatusCode::kNotFound);
  CHECK(unknown.status().message() == "node nope not found");
  CHECK(f.core->SetCordon("a", true, std::string(201, 'x'), "operator").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(f.core->SetCordon("a", true, "line\nbreak", "operator").status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(f.core->SetCordon("a", false, "", "operator").ok());  // not cordoned: nothing to record
  CHECK(f.Ledger().empty());
  CHECK(f.core->CreateVm("acme", Spec("web"), "").ok());
}

TEST_CASE("cordoning twice records once and a new reason replaces the old", "[fleet][cordon]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000)});
  REQUIRE(f.core->SetCordon("a", true, "drain", "scheduler").ok());
  REQUIRE(f.core->SetCordon("a", true, "drain", "scheduler").ok());
  REQUIRE(f.core->SetCordon("a", true, "maintenance", "operator").ok());
  CHECK(f.Ledger({"reason"}) ==
        std::vector<std::string>{"node.cordon a reason=drain", "node.cordon a reason=maintenance"});
  auto denied = f.core->CreateVm("acme", Spec("web"), "");
  CHECK(denied.status().code() == absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace ppn::fleet

namespace ppn::fleet {
namespace {

TEST_CASE("a revoked node's VMs read UNKNOWN and the change is in the ledger", "[fleet][revoke]") {
  testing::CoreFixture f;
  f.Nodes({testing::Beat("a", 4000), testing::Beat("b", 4000)});
  auto vm = f.core->CreateVm("acme", testing::Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string node = vm->vm.node_id();
  f.core->OnHeartbeat(testing::With(testing::Beat(node, 4000), {testing::Running(vm->vm.vm_id(), "acme")}));
  REQUIRE(f.Get(vm->vm.vm_id()).state() == ppn::types::v1::VM_STATE_RUNNING);
  f.core->RevokeNode(node);
  ppn::fleet::v1::VmRecord seen = f.Get(vm->vm.vm_id());
  CHECK(seen.state() == ppn::types::v1::VM_STATE_UNKNOWN);
  CHECK(seen.state_message() == "node " + node + " was revoked");
  // Its heartbeats change nothing any more.
  f.core->OnHeartbeat(testing::With(testing::Beat(node, 4000), {testing::Running(vm->vm.vm_id(), "acme")}));
  CHECK(f.Get(vm->vm.vm_id()).state() == ppn::types::v1::VM_STATE_UNKNOWN);
  std::vector<std::string> ledger = f.Ledger({"reason"});
  CHECK(std::count(ledger.begin(), ledger.end(), "vm.state " + vm->vm.vm_id() + " reason=its node was revoked") == 1);
}

}  // namespace
}  // namespace ppn::fleet
