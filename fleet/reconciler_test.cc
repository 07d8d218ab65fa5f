// Reconciliation through FleetCore with fake agents and a FakeClock: what the fleet's
// records say after restarts, lost answers and migrations it did not see finish.

#include "fleet/reconciler.h"

#include "catch2/catch.hpp"
#include "fleet/testing/core_fixture.h"

namespace ppn::fleet {
namespace {

using ppn::types::v1::VM_STATE_DESTROYED;
using ppn::types::v1::VM_STATE_FAILED;
using ppn::types::v1::VM_STATE_LOST;
using ppn::types::v1::VM_STATE_MIGRATING;
using ppn::types::v1::VM_STATE_PENDING;
using ppn::types::v1::VM_STATE_RUNNING;
using testing::Beat;
using testing::CoreFixture;
using testing::PausedCopy;
using testing::Running;
using testing::Spec;
using testing::With;

TEST_CASE("the registry survives a restart and reconciles with heartbeats", "[fleet][restart]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "");
  auto db = f.core->CreateVm("globex", Spec("db"), "");
  REQUIRE(web.ok());
  REQUIRE(db.ok());
  f.Open();
  f.core->AddNode("a", "a:1");
  CHECK(f.core->ListVms(Scope{"acme"}, {})->vms(0).vm_id() == web->vm.vm_id());
  CHECK(f.core->ListVms(Scope{"globex"}, {})->vms(0).vm_id() == db->vm.vm_id());

  // The node reports web, plus a VM the store never heard of; db is gone.
  ppn::host::v1::Heartbeat hb =
      With(Beat("a", 7000), {Running(web->vm.vm_id(), "acme"), Running("vm-stray", "initech")});
  f.core->OnHeartbeat(hb);
  CHECK(f.core->GetVm(Scope{"initech"}, "vm-stray")->state() == VM_STATE_RUNNING);
  CHECK(f.core->GetVm(Scope{"acme"}, "vm-stray").status().code() == absl::StatusCode::kNotFound);
  CHECK(f.core->GetVm(Scope{"globex"}, db->vm.vm_id())->state() == VM_STATE_LOST);
  CHECK(f.Ledger({"to", "reason"}) ==
        std::vector<std::string>{"vm.create " + web->vm.vm_id(), "vm.create " + db->vm.vm_id(),
                                 "vm.adopt vm-stray reason=unknown to the fleet",
                                 "vm.state " + db->vm.vm_id() + " to=LOST reason=node a no longer reports this VM"});

  SECTION("a silent node's VMs become UNKNOWN, never dropped, and come back") {
    f.clock.Advance(absl::Seconds(4));
    f.core->RunOnce();
    CHECK(f.core->ListNodes()[0].state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE);
    auto v = f.core->GetVm(Scope{"acme"}, web->vm.vm_id());
    CHECK(v->state() == ppn::types::v1::VM_STATE_UNKNOWN);
    CHECK(v->state_message() == "node a is unreachable");
    f.core->OnHeartbeat(hb);
    CHECK(f.core->GetVm(Scope{"acme"}, web->vm.vm_id())->state() == VM_STATE_RUNNING);
    std::vector<std::string> ledger = f.Ledger({"from", "to"});
    CHECK(std::count(ledger.begin(), ledger.end(), "vm.state " + web->vm.vm_id() + " from=RUNNING to=UNKNOWN") == 1);
    CHECK(std::count(ledger.begin(), ledger.end(), "vm.state " + web->vm.vm_id() + " from=UNKNOWN to=RUNNING") == 1);
  }
  SECTION("a LOST VM that its node reports again recovers") {
    *hb.add_vms() = Running(db->vm.vm_id(), "globex");
    f.core->OnHeartbeat(hb);
    CHECK(f.Get(db->vm.vm_id()).state() == VM_STATE_RUNNING);
    CHECK(f.Ledger({"from", "to"}).back() == "vm.state " + db->vm.vm_id() + " from=LOST to=RUNNING");
  }
}

TEST_CASE("a PENDING record left by a crash settles at its node's next heartbeat", "[fleet][crash][pending]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  // A fleet that died between writing PENDING and hearing from the node.
  f.agents.LoseSpawnAnswers("a", absl::UnavailableError("node a is unreachable"));
  f.agents.FailDestroy("a", absl::UnavailableError("node a is unreachable"));
  REQUIRE(f.core->CreateVm("acme", Spec("started"), "").status().code() == absl::StatusCode::kUnavailable);
  f.agents.LoseSpawnAnswers("a", absl::OkStatus());
  f.agents.FailNode("a", absl::UnavailableError("node a is unreachable"));
  REQUIRE(f.core->CreateVm("acme", Spec("never"), "").status().code() == absl::StatusCode::kUnavailable);
  auto list = f.core->ListVms(Scope{"acme"}, {});
  REQUIRE(list->vms_size() == 2);
  std::string started, never;
  for (const auto& vm : list->vms()) (vm.spec().display_name() == "started" ? started : never) = vm.vm_id();
  CHECK(f.Get(never).state() == VM_STATE_PENDING);
  CHECK(f.Reserved("a") == 512);

  f.Open();  // the fleet restarts; nothing is in flight any more
  f.core->AddNode("a", "a:1");
  CHECK(f.Reserved("a") == 512);  // the node may be starting them: their room stays held
  f.core->OnHeartbeat(With(Beat("a", 7744), f.agents.Instances("a")));
  CHECK(f.Get(started).state() == VM_STATE_RUNNING);
  CHECK(f.Get(never).state() == VM_STATE_FAILED);
  CHECK(f.Get(never).state_message() == "its node never started it");
  CHECK(f.Reserved("a") == 0);
  CHECK(f.Ledger({"settled_by", "to"}) ==
        std::vector<std::string>{"vm.create " + started + " settled_by=heartbeat", "vm.state " + never + " to=FAILED"});
  // The tenant can be rid of it at once.
  CHECK(f.core->DestroyVm(Scope{"acme"}, never, Actor::Tenant())->state() == VM_STATE_DESTROYED);
}

TEST_CASE("a heartbeat that arrives while a create is in flight does not settle it", "[fleet][pending]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  f.agents.LoseSpawnAnswers("a", absl::UnavailableError("node a is unreachable"));
  f.agents.FailDestroy("a", absl::UnavailableError("node a is unreachable"));
  f.agents.OnSpawn([&] {
    // Sent before the node had the VM.
    f.core->OnHeartbeat(Beat("a", 8000));
  });
  REQUIRE(f.core->CreateVm("acme", Spec("web"), "").status().code() == absl::StatusCode::kUnavailable);
  f.agents.OnSpawn(nullptr);
  std::string id = f.core->ListVms(Scope{"acme"}, {})->vms(0).vm_id();
  CHECK(f.Get(id).state() == VM_STATE_PENDING);
  f.clock.Advance(absl::Milliseconds(500));
  f.core->OnHeartbeat(With(Beat("a", 7744), f.agents.Instances("a")));
  CHECK(f.Get(id).state() == VM_STATE_RUNNING);
}

TEST_CASE("a node that reports a VM whose create is in flight leaves the create to settle it", "[fleet][pending]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  f.agents.OnSpawn([&] {
    auto list = f.core->ListVms(Scope{"acme"}, {});
    f.core->OnHeartbeat(With(Beat("a", 7744), {Running(list->vms(0).vm_id(), "acme")}));
    CHECK(f.Get(list->vms(0).vm_id()).state() == VM_STATE_PENDING);
  });
  auto r = f.core->CreateVm("acme", Spec("web"), "");
  f.agents.OnSpawn(nullptr);
  REQUIRE(r.ok());
  CHECK(f.Ledger({"settled_by"}) == std::vector<std::string>{"vm.create " + r->vm.vm_id() + " settled_by=spawn"});
}

TEST_CASE("a VM that another node runs is adopted there and its paused copy is destroyed", "[fleet][migration]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000), Beat("b", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(web.ok());
  std::string id = web->vm.vm_id();
  REQUIRE(web->vm.node_id() == "a");
  f.clock.Advance(absl::Seconds(1));
  // A migration a -> b completed while the fleet could not record it: b runs the guest and
  // a holds the paused copy.
  f.agents.Place("b", Running(id, "acme"));

  SECTION("the target reports first") {
    // One heartbeat could be a live migration the scheduler is about to record; two are not.
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
    CHECK(f.Get(id).node_id() == "a");
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
    CHECK(f.Get(id).node_id() == "b");
    CHECK(f.Get(id).state() == VM_STATE_RUNNING);
    f.core->OnHeartbeat(With(Beat("a", 7744), {PausedCopy(id, "acme")}));
  }
  SECTION("the source reports first") {
    f.core->OnHeartbeat(With(Beat("a", 7744), {PausedCopy(id, "acme")}));
    CHECK(f.Get(id).node_id() == "a");
    CHECK(f.Get(id).state() == VM_STATE_MIGRATING);
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
  }
  CHECK(f.Get(id).node_id() == "b");
  f.core->RunOnce();
  CHECK(f.agents.vms()["a"].empty());
  CHECK(f.agents.vms()["b"] == std::set<std::string>{id});
  CHECK(f.Ledger({"from_node", "node"}).back() == "vm.adopt " + id + " from_node=a node=b");
  // The scheduler's late RecordMigration agrees with what the fleet already knows.
  ppn::fleet::v1::RecordMigrationRequest rec;
  rec.set_vm_id(id);
  rec.set_source_node_id("a");
  rec.set_target_node_id("b");
  CHECK(f.core->RecordMigration(rec).ok());
  // And the tenant's destroy now reaches the copy that runs.
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, id, Actor::Tenant()).ok());
  CHECK(f.agents.vms()["b"].empty());
}

TEST_CASE("a live migration the scheduler records is not also an adoption", "[fleet][migration]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000), Beat("b", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(web.ok());
  std::string id = web->vm.vm_id();
  f.clock.Advance(absl::Seconds(1));
  f.core->OnHeartbeat(With(Beat("a", 7744), {Running(id, "acme")}));
  // The copy finished: b runs the guest, a has already removed its copy, and one heartbeat of
  // each arrives before the scheduler's RecordMigration.
  f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
  CHECK(f.Get(id).node_id() == "a");
  ppn::fleet::v1::RecordMigrationRequest rec;
  rec.set_vm_id(id);
  rec.set_source_node_id("a");
  rec.set_target_node_id("b");
  REQUIRE(f.core->RecordMigration(rec).ok());
  f.core->OnHeartbeat(Beat("a", 8000));
  f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
  CHECK(f.Get(id).node_id() == "b");
  std::vector<std::string> kinds = f.Kinds();
  CHECK(std::count(kinds.begin(), kinds.end(), "vm.adopt") == 0);
}

TEST_CASE("nothing is marked LOST while any node reports it", "[fleet][migration]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000), Beat("b", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "");
  std::string id = web->vm.vm_id();
  f.clock.Advance(absl::Seconds(1));

  SECTION("an incoming copy on another node keeps it as it is") {
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme", VM_STATE_MIGRATING)}));
    f.core->OnHeartbeat(Beat("a", 8000));  // the source dropped it (its agent restarted, say)
    CHECK(f.Get(id).state() == VM_STATE_RUNNING);
    CHECK(f.Get(id).node_id() == "a");
  }
  SECTION("a restarted fleet waits until every node has reported") {
    f.Open();
    f.core->AddNode("a", "a:1");
    f.core->AddNode("b", "b:1");
    f.core->OnHeartbeat(Beat("a", 8000));  // a no longer has it; b has not spoken yet
    CHECK(f.Get(id).state() == VM_STATE_RUNNING);
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
    CHECK(f.Get(id).node_id() == "b");
    CHECK(f.Get(id).state() == VM_STATE_RUNNING);
    std::vector<std::string> kinds = f.Kinds();
    CHECK(std::count(kinds.begin(), kinds.end(), "vm.state") == 0);  // never LOST on the way
  }
  SECTION("both nodes run it: an error for the operator, nothing moves") {
    f.core->OnHeartbeat(With(Beat("a", 7744), {Running(id, "acme")}));
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme")}));
    CHECK(f.Get(id).node_id() == "a");
    f.core->RunOnce();
    CHECK(f.agents.calls().size() == 1);  // nothing destroyed
  }
}

TEST_CASE("a paused copy that no node takes over within two heartbeats is resumed", "[fleet][migration]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000), Beat("b", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "");
  std::string id = web->vm.vm_id();
  f.agents.Place("a", PausedCopy(id, "acme"));
  f.clock.Advance(absl::Seconds(1));
  auto beat_a = [&] { f.core->OnHeartbeat(With(Beat("a", 7744), f.agents.Instances("a"))); };

  SECTION("nobody has it") {
    beat_a();
    f.core->RunOnce();
    CHECK(f.agents.calls().back() == "SpawnVm a " + id);  // one heartbeat is not enough
    CHECK(f.Get(id).state() == VM_STATE_MIGRATING);
    beat_a();
    f.core->RunOnce();
    CHECK(f.agents.calls().back() == "ResumeVm a " + id);
    CHECK(f.Get(id).state() == VM_STATE_RUNNING);
    CHECK(f.Ledger({"from", "to"}).back() == "vm.state " + id + " from=MIGRATING to=RUNNING");
  }
  SECTION("an incoming copy elsewhere is still loading: wait") {
    f.core->OnHeartbeat(With(Beat("b", 7744), {Running(id, "acme", VM_STATE_MIGRATING)}));
    for (int i = 0; i < 3; ++i) {
      beat_a();
      f.core->RunOnce();
    }
    CHECK(f.agents.calls().back() == "SpawnVm a " + id);
  }
}

TEST_CASE("a revoked node's reports neither make records nor move them", "[fleet][revoke]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000), Beat("b", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "");
  std::string id = web->vm.vm_id();
  f.clock.Advance(absl::Seconds(1));
  f.core->RevokeNode("b");
  f.core->OnHeartbeat(With(Beat("b", 8000), {Running(id, "acme"), Running("vm-claimed", "acme")}));
  CHECK(f.Get(id).node_id() == "a");
  CHECK(f.core->GetVm(Scope{}, "vm-claimed").status().code() == absl::StatusCode::kNotFound);
  f.core->OnHeartbeat(Beat("a", 8000));
  CHECK(f.Get(id).state() == VM_STATE_LOST);  // b's word does not keep it alive either
}

TEST_CASE("a node never heard from goes unreachable so its VMs can be destroyed at once", "[fleet][restart]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "");
  f.Open();
  f.core->AddNode("a", "a:1");  // it never comes back
  f.clock.Advance(absl::Seconds(2));
  f.core->RunOnce();
  CHECK(f.core->ListNodes()[0].state() == ppn::fleet::v1::NODE_STATE_JOINING);
  f.clock.Advance(absl::Seconds(2));
  f.core->RunOnce();
  CHECK(f.core->ListNodes()[0].state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE);
  CHECK(f.Get(web->vm.vm_id()).state() == ppn::types::v1::VM_STATE_UNKNOWN);
  CHECK(f.core->DestroyVm(Scope{"acme"}, web->vm.vm_id(), Actor::Tenant())->state() == VM_STATE_DESTROYED);
  CHECK(f.agents.calls().size() == 1);  // only the spawn: no wait on a node that is not there
}

TEST_CASE("heartbeat fields from the wire never reach a protobuf CHECK", "[fleet][validation]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  ppn::host::v1::Heartbeat hb = Beat("a", 8000);
  hb.mutable_interval()->set_seconds(int64_t{1} << 62);
  ppn::host::v1::VmInstance vm = Running("vm-odd", "acme");
  vm.mutable_start_time()->set_seconds(int64_t{1} << 62);
  vm.mutable_spec()->mutable_ttl()->set_seconds(-(int64_t{1} << 62));
  vm.mutable_spec()->set_user_data("secret");
  *hb.add_vms() = vm;
  ppn::host::v1::VmInstance weird = Running("vm-weird", "acme");
  weird.set_state(static_cast<ppn::types::v1::VmState>(99));
  *hb.add_vms() = weird;
  hb.set_kvm(static_cast<ppn::types::v1::KvmSupport>(42));
  hb.mutable_vms(0)->set_accelerator(static_cast<ppn::types::v1::Accelerator>(7));
  f.core->OnHeartbeat(hb);
  CHECK(f.core->GetVm(Scope{}, "vm-weird").status().code() == absl::StatusCode::kNotFound);  // not adopted
  CHECK(f.core->ListNodes()[0].kvm() == ppn::types::v1::KVM_SUPPORT_UNSPECIFIED);
  auto adopted = f.core->GetVm(Scope{"acme"}, "vm-odd");
  REQUIRE(adopted.ok());
  CHECK(adopted->create_time().seconds() == absl::ToUnixSeconds(f.clock.Now()));
  CHECK_FALSE(adopted->has_expire_time());
  CHECK(adopted->spec().user_data().empty());
  CHECK(adopted->accelerator() == ppn::types::v1::ACCELERATOR_UNSPECIFIED);
  f.clock.Advance(absl::Seconds(2));
  f.core->RunOnce();  // the bogus interval was not taken: 1 s still applies
  CHECK(f.core->ListNodes()[0].state() == ppn::fleet::v1::NODE_STATE_ALIVE);
  f.clock.Advance(absl::Seconds(2));
  f.core->RunOnce();
  CHECK(f.core->ListNodes()[0].state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE);
}

TEST_CASE("a node's tunnel and warnings are shown as its latest heartbeat says", "[fleet][mesh]") {
  CoreFixture f;
  ppn::host::v1::Heartbeat hb = Beat("a", 8000);
  hb.mutable_mesh()->set_mesh_address("10.8.0.2");
  hb.mutable_mesh()->set_tunnel_up(true);
  hb.mutable_mesh()->add_peers()->set_node_id("cloud");
  hb.add_warnings("no network isolation");
  f.Nodes({hb});
  auto node = [&] { return f.core->ListNodes().at(0); };
  CHECK(node().mesh().mesh_address() == "10.8.0.2");
  CHECK(node().mesh().tunnel_up());
  CHECK(node().mesh().peers(0).node_id() == "cloud");
  CHECK(node().warnings(0) == "no network isolation");

  ppn::host::v1::Heartbeat later = Beat("a", 8000);  // a node that runs without a tunnel now
  f.core->OnHeartbeat(later);
  CHECK(!node().has_mesh());
  CHECK(node().warnings().empty());
}

TEST_CASE("a node's reclaimed memory is shown and three quarters of it places VMs", "[fleet][balloon]") {
  CoreFixture f;
  ppn::host::v1::Heartbeat hb = Beat("a", 200);
  hb.set_reclaimed_memory_mib(400);  // idle guests' balloons took this back
  ppn::host::v1::VmInstance vm = Running("vm-idle", "acme");
  vm.mutable_memory()->set_actual_mib(112);
  vm.mutable_memory()->set_balloon_target_mib(112);
  vm.mutable_memory()->set_max_mib(512);
  f.Nodes({With(hb, {vm})});
  CHECK(f.core->ListNodes().at(0).reclaimed_memory_mib() == 400);
  // 200 available + 300 of the reclaimed 400: a VM of 500 MiB fits, one of 501 does not.
  CHECK(f.core->CreateVm("acme", Spec("big", 501), "").status().code() == absl::StatusCode::kResourceExhausted);
  auto r = f.core->CreateVm("acme", Spec("fits", 500), "");
  INFO(r.status().message());
  CHECK(r.ok());
}

}  // namespace
}  // namespace ppn::fleet
