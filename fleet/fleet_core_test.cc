// FleetCore's request side: creates (validation, catalog, placement by memory and disk,
// fencing a lost answer, idempotent retries), destroys, network changes, TTL and the ledger
// entries they make.
// Reconciliation with heartbeats is in reconciler_test.cc.

#include "fleet/fleet_core.h"

#include <atomic>
#include <thread>

#include "catch2/catch.hpp"
#include "fleet/testing/core_fixture.h"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::VmRecord;
using testing::Beat;
using testing::CoreFixture;
using testing::Running;
using testing::Spec;
using testing::With;

TEST_CASE("50 concurrent creates against room for 10 create exactly 10 and overcommit nothing", "[fleet][placement]") {
  CoreFixture f;
  f.Nodes({Beat("a", 1280), Beat("b", 1280)});  // 5 VMs of 256 MiB each
  std::atomic<int> ok{0}, exhausted{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      auto r = f.core->CreateVm("tenant-" + std::to_string(i % 3), Spec("vm-" + std::to_string(i)), "");
      if (r.ok()) {
        ++ok;
      } else if (r.status().code() == absl::StatusCode::kResourceExhausted) {
        ++exhausted;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 10);
  CHECK(exhausted == 40);
  CHECK(other == 0);
  CHECK(f.agents.memory()["a"] <= 1280);
  CHECK(f.agents.memory()["b"] <= 1280);
  auto denied = f.core->CreateVm("tenant-0", Spec("late"), "");
  CHECK(denied.status().message().find("no node can take the VM") != std::string::npos);
  CHECK(ShortageOf(denied.status()) == Shortage::kMemory);
}

TEST_CASE("a failed spawn releases the reservation and tries the next node once", "[fleet]") {
  CoreFixture f;
  f.Nodes({Beat("big", 4000), Beat("small", 1000)});
  f.agents.FailNode("big", absl::UnavailableError("node big is unreachable: connection refused"));
  auto r = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(r.ok());
  CHECK(r->vm.node_id() == "small");
  // The unanswered node was fenced before the next one was asked.
  std::string id = r->vm.vm_id();
  CHECK(f.agents.calls() ==
        std::vector<std::string>{"SpawnVm big " + id, "DestroyVm big " + id, "SpawnVm small " + id});
  f.agents.FailNode("small", absl::FailedPreconditionError("QEMU did not start"));
  auto both = f.core->CreateVm("acme", Spec("web2"), "");
  CHECK(both.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(both.status().message() ==
        "spawn on big failed: node big is unreachable: connection refused; spawn on small failed: QEMU did not start");
  auto list = f.core->ListVms(Scope{"acme"}, {});
  REQUIRE(list.ok());
  CHECK(list->vms_size() == 1);  // the failed VM left no record
  CHECK(f.Reserved("big") == 0);
  CHECK(f.Reserved("small") == 256);  // only web's, until small's heartbeat counts it
}

TEST_CASE("a lost spawn answer is fenced before another node may run the VM", "[fleet][crash]") {
  CoreFixture f;
  f.Nodes({Beat("big", 4000), Beat("small", 1000)});
  // big starts the VM but its answer never arrives.
  f.agents.LoseSpawnAnswers("big", absl::UnavailableError("node big is unreachable: deadline exceeded"));

  SECTION("the fence succeeds: big's copy is gone and small runs the only one") {
    auto r = f.core->CreateVm("acme", Spec("web"), "");
    REQUIRE(r.ok());
    CHECK(r->vm.node_id() == "small");
    CHECK(f.agents.vms()["big"].empty());
    CHECK(f.agents.vms()["small"] == std::set<std::string>{r->vm.vm_id()});
  }
  SECTION("the fence fails: the VM stays PENDING on big, nothing runs on small, the tenant hears UNAVAILABLE") {
    f.agents.FailDestroy("big", absl::UnavailableError("node big is unreachable"));
    auto r = f.core->CreateVm("acme", Spec("web"), "req-7");
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK(f.agents.vms()["small"].empty());
    auto list = f.core->ListVms(Scope{"acme"}, {});
    REQUIRE(list->vms_size() == 1);
    VmRecord pending = list->vms(0);
    CHECK(pending.state() == ppn::types::v1::VM_STATE_PENDING);
    CHECK(pending.node_id() == "big");
    CHECK(f.Reserved("big") == 256);  // big may be running it: its room stays held

    // A retry of the same request gets the same VM, never a second one.
    auto retry = f.core->CreateVm("acme", Spec("web"), "req-7");
    REQUIRE(retry.ok());
    CHECK(retry->replayed);
    CHECK(retry->vm.vm_id() == pending.vm_id());

    // big's next heartbeat shows it running: the record settles there.
    f.clock.Advance(absl::Seconds(1));
    f.core->OnHeartbeat(With(Beat("big", 3744), f.agents.Instances("big")));
    CHECK(f.Get(pending.vm_id()).state() == ppn::types::v1::VM_STATE_RUNNING);
    CHECK(f.Reserved("big") == 0);
    CHECK(f.Ledger({"settled_by"}) ==
          std::vector<std::string>{"vm.create " + pending.vm_id() + " settled_by=heartbeat"});
  }
}

TEST_CASE("a TTL of 2^62 seconds is INVALID_ARGUMENT and leaves no record and no reservation", "[fleet][validation]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  ppn::types::v1::VmSpec spec = Spec("forever");
  spec.mutable_ttl()->set_seconds(int64_t{1} << 62);
  auto r = f.core->CreateVm("acme", spec, "req-1");
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  v1::ListVmsRequest all;
  all.set_include_stopped(true);
  CHECK(f.core->ListVms(Scope{}, all)->vms_size() == 0);
  CHECK(f.Reserved("a") == 0);
  CHECK(f.agents.calls().empty());
  f.Open();  // nothing durable either
  CHECK(f.core->ListVms(Scope{}, all)->vms_size() == 0);
}

TEST_CASE("an image no node offers is INVALID_ARGUMENT before placement and names no node", "[fleet][catalog]") {
  CoreFixture f;
  ppn::host::v1::Heartbeat a = Beat("laptop-a", 8000), b = Beat("laptop-b", 2000);
  a.add_images("alpine");
  b.add_images("alpine");
  b.add_images("debian-12");
  f.Nodes({a, b});

  auto r = f.core->CreateVm("acme", Spec("web"), "");  // debian-12: only laptop-b has it
  REQUIRE(r.ok());
  CHECK(r->vm.node_id() == "laptop-b");

  ppn::types::v1::VmSpec other = Spec("other");
  other.set_image("ppn-test-guest");
  auto refused = f.core->CreateVm("acme", other, "");
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(refused.status().message() == "image ppn-test-guest is not offered");
  CHECK(f.agents.calls().size() == 1);  // nothing was tried for it

  SECTION("a node that turns out not to have it answers NOT_FOUND: the same words, no node, no catalog") {
    f.agents.FailNode("laptop-b", absl::NotFoundError("image \"debian-12\" is not in this node's catalog (have: x)"));
    auto missing = f.core->CreateVm("acme", Spec("web2"), "");
    CHECK(missing.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(missing.status().message() == "image debian-12 is not offered");
  }
}

TEST_CASE("placement counts disk and says which resource ran out", "[fleet][placement][disk]") {
  CoreFixture f;
  ppn::host::v1::Heartbeat a = Beat("a", 8000);
  a.set_disk_total_mib(100000);
  a.set_disk_available_mib(5000);
  f.Nodes({a});
  CHECK(f.core->CreateVm("acme", Spec("one"), "").ok());  // 2 GiB each (disk_gib 0)
  CHECK(f.core->CreateVm("acme", Spec("two"), "").ok());
  auto third = f.core->CreateVm("acme", Spec("three"), "");  // 4 GiB reserved, 5000 MiB free
  CHECK(third.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(ShortageOf(third.status()) == Shortage::kDisk);
  CHECK(third.status().message() ==
        "no node can take the VM: a: only 904 MiB of disk free (5000 available, 4096 reserved), needs 2048");

  ppn::types::v1::VmSpec huge = Spec("huge");
  huge.set_disk_gib(4096);
  CHECK(ShortageOf(f.core->CreateVm("acme", huge, "").status()) == Shortage::kDisk);
  CHECK(ShortageOf(f.core->CreateVm("acme", Spec("big", 9000), "").status()) == Shortage::kMemory);
  f.clock.Advance(absl::Seconds(5));
  f.core->RunOnce();  // a goes silent
  CHECK(ShortageOf(f.core->CreateVm("acme", Spec("any"), "").status()) == Shortage::kNodes);
  CHECK(ShortageOf(absl::ResourceExhaustedError("quota")) == Shortage::kNone);
}

TEST_CASE("a request_id returns the original VM and refuses a different spec", "[fleet][idempotency]") {
  CoreFixture f;
  f.Nodes({Beat("a", 300)});
  ppn::types::v1::VmSpec spec = Spec("web");
  spec.set_user_data("#cloud-config\n");
  auto first = f.core->CreateVm("acme", spec, "req-1");
  REQUIRE(first.ok());
  CHECK_FALSE(first->replayed);
  CHECK(first->vm.request_id() == "req-1");

  // The node is full now: a replay does not need room, it is the same VM.
  auto again = f.core->CreateVm("acme", spec, "req-1");
  REQUIRE(again.ok());
  CHECK(again->replayed);
  CHECK(again->vm.vm_id() == first->vm.vm_id());

  ppn::types::v1::VmSpec other_data = spec;
  other_data.set_user_data("#cloud-config\nruncmd: [reboot]\n");
  auto different = f.core->CreateVm("acme", other_data, "req-1");
  CHECK(different.status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(different.status().message() == "request_id req-1 was used for a different VM");
  CHECK(f.core->CreateVm("acme", Spec("web-2"), "req-1").status().code() == absl::StatusCode::kAlreadyExists);

  // Keys are per tenant; and a restart remembers both the key and the fingerprint.
  CHECK(f.core->CreateVm("globex", Spec("web"), "req-1").status().code() == absl::StatusCode::kResourceExhausted);
  f.Open();
  f.Nodes({With(Beat("a", 44), {Running(first->vm.vm_id(), "acme")})});
  CHECK(f.core->CreateVm("acme", spec, "req-1")->replayed);
  CHECK(f.core->CreateVm("acme", other_data, "req-1").status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(f.Kinds() == std::vector<std::string>{"vm.create"});  // the retries are not creates
}

TEST_CASE("tenants see only their own VMs and names, ids and retries behave", "[fleet][isolation]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto mine = f.core->CreateVm("acme", Spec("web"), "req-1");
  REQUIRE(mine.ok());
  CHECK(f.core->GetVm(Scope{"acme"}, mine->vm.vm_id()).ok());
  auto theirs = f.core->GetVm(Scope{"globex"}, mine->vm.vm_id());
  CHECK(theirs.status().code() == absl::StatusCode::kNotFound);
  // Exactly what a VM that does not exist gets: nothing reveals it is someone else's.
  CHECK(std::string(theirs.status().message()) == "vm " + mine->vm.vm_id() + " not found");
  CHECK(std::string(f.core->GetVm(Scope{"globex"}, "vm-nope").status().message()) == "vm vm-nope not found");
  CHECK(f.core->DestroyVm(Scope{"globex"}, mine->vm.vm_id(), Actor::Tenant()).status().code() ==
        absl::StatusCode::kNotFound);
  CHECK(f.core->ListVms(Scope{"globex"}, {})->vms_size() == 0);
  CHECK(f.core->ListVms(Scope{}, {})->vms_size() == 1);
  CHECK(f.core->CreateVm("acme", Spec("web"), "").status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(f.core->CreateVm("globex", Spec("web"), "").ok());  // names are per tenant
  auto retry = f.core->CreateVm("acme", Spec("web"), "req-1");
  REQUIRE(retry.ok());
  CHECK(retry->vm.vm_id() == mine->vm.vm_id());
  CHECK(f.core->CreateVm("acme", Spec("Bad Name"), "").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a tenant can always destroy a VM that is not running and the node drops it later", "[fleet][destroy]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});

  SECTION("PENDING while its create is in flight") {
    std::string id;
    f.agents.OnSpawn([&] {
      auto list = f.core->ListVms(Scope{"acme"}, {});
      id = list->vms(0).vm_id();
      auto d = f.core->DestroyVm(Scope{"acme"}, id, Actor::Tenant());
      CHECK(d->state() == ppn::types::v1::VM_STATE_DESTROYED);
    });
    auto r = f.core->CreateVm("acme", Spec("web"), "");
    CHECK(r.status().code() == absl::StatusCode::kAborted);
    f.agents.OnSpawn(nullptr);
    CHECK(f.Get(id).state() == ppn::types::v1::VM_STATE_DESTROYED);
    CHECK(f.Reserved("a") == 0);
    // The node started it anyway: its next heartbeat gets it destroyed there.
    f.core->OnHeartbeat(With(Beat("a", 7744), f.agents.Instances("a")));
    f.core->RunOnce();
    CHECK(f.agents.vms()["a"].empty());
    CHECK(f.Ledger({"who"}) ==
          std::vector<std::string>{"vm.destroy " + id + " who=tenant", "vm.destroy " + id + " who=fleet"});
  }
  SECTION("UNKNOWN on an unreachable node, LOST and FAILED") {
    std::vector<std::string> ids;
    for (const char* name : {"web", "db", "cache"}) ids.push_back(f.core->CreateVm("acme", Spec(name), "")->vm.vm_id());
    // db is gone from the node (LOST); cache failed there.
    f.core->OnHeartbeat(
        With(Beat("a", 7000), {Running(ids[0], "acme"), Running(ids[2], "acme", ppn::types::v1::VM_STATE_FAILED)}));
    CHECK(f.Get(ids[1]).state() == ppn::types::v1::VM_STATE_LOST);
    CHECK(f.Get(ids[2]).state() == ppn::types::v1::VM_STATE_FAILED);
    f.clock.Advance(absl::Seconds(4));
    f.core->RunOnce();
    CHECK(f.Get(ids[0]).state() == ppn::types::v1::VM_STATE_UNKNOWN);
    for (const std::string& id : ids) {
      auto d = f.core->DestroyVm(Scope{"acme"}, id, Actor::Tenant());
      REQUIRE(d.ok());
      CHECK(d->state() == ppn::types::v1::VM_STATE_DESTROYED);
    }
    CHECK(f.core->ListVms(Scope{"acme"}, {})->vms_size() == 0);  // none counts any more
    CHECK(f.agents.calls().size() == 3);                         // the three spawns: nobody waited on the node
    // The node comes back still running web: it is destroyed there.
    f.core->OnHeartbeat(With(Beat("a", 7000), {Running(ids[0], "acme")}));
    f.core->RunOnce();
    CHECK(f.agents.calls().back() == "DestroyVm a " + ids[0]);
  }
}

TEST_CASE("the fleet's ledger entries say who created and destroyed each VM", "[fleet][ledger]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto web = f.core->CreateVm("acme", Spec("web"), "req-1");
  auto db = f.core->CreateVm("acme", Spec("db"), "");
  REQUIRE(web.ok());
  REQUIRE(db.ok());
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, web->vm.vm_id(), Actor::Tenant()).ok());
  REQUIRE(f.core->DestroyVm(Scope{}, db->vm.vm_id(), Actor::Operator()).ok());
  REQUIRE(f.core->DestroyVm(Scope{}, db->vm.vm_id(), Actor::Operator()).ok());  // idempotent, not logged twice
  CHECK(f.Ledger({"who", "role", "request_id"}) ==
        std::vector<std::string>{"vm.create " + web->vm.vm_id() + " request_id=req-1",
                                 "vm.create " + db->vm.vm_id() + " request_id=",
                                 "vm.destroy " + web->vm.vm_id() + " who=tenant role=tenant-proxy",
                                 "vm.destroy " + db->vm.vm_id() + " who=operator role=operator"});
  absl::MutexLock l(&f.mu);
  CHECK(f.delivered[0].tenant_id() == "acme");
  CHECK(f.delivered[0].attributes().at("node") == "a");
  CHECK(f.delivered[0].attributes().count("user_data") == 0);
}

ppn::types::v1::EgressPolicy Locked(uint64_t rate_limit_kbit = 0) {
  ppn::types::v1::EgressPolicy p;
  p.set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  auto* allow = p.add_allow();
  allow->set_cidr("203.0.113.0/24");
  allow->set_port_first(443);
  p.set_rate_limit_kbit(rate_limit_kbit);
  return p;
}

TEST_CASE("a running VM's network change reaches its node and is recorded durably with a vm.network entry",
          "[fleet][network]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string id = vm->vm.vm_id();
  auto changed = f.core->UpdateVmNetwork(Scope{"acme"}, id, Locked(800), Actor::Tenant());
  INFO(changed.status().ToString());
  REQUIRE(changed.ok());
  CHECK(changed->spec().egress().SerializeAsString() == Locked(800).SerializeAsString());
  CHECK(f.agents.calls().back() == "UpdateVmNetwork a " + id);
  REQUIRE(f.agents.Egress("a", id).has_value());
  CHECK(f.agents.Egress("a", id)->SerializeAsString() == Locked(800).SerializeAsString());

  SECTION("the operator may change any VM's and the ledger says who") {
    REQUIRE(f.core->UpdateVmNetwork(Scope{}, id, ppn::types::v1::EgressPolicy(), Actor::Operator()).ok());
    CHECK(f.Ledger({"who", "role", "internet"}) ==
          std::vector<std::string>{"vm.create " + id,
                                   "vm.network " + id + " who=tenant role=tenant-proxy internet=denied",
                                   "vm.network " + id + " who=operator role=operator internet=allowed"});
  }
  SECTION("the record keeps it across a restart") {
    CHECK(f.Ledger({"who", "internet", "allow_rules", "deny_rules", "rate_limit_kbit"}).back() ==
          "vm.network " + id + " who=tenant internet=denied allow_rules=1 deny_rules=0 rate_limit_kbit=800");
    {
      absl::MutexLock l(&f.mu);
      CHECK(f.delivered.back().tenant_id() == "acme");
      CHECK(f.delivered.back().attributes().at("node") == "a");
      // The shape only: the destinations stay out of the permanent ledger.
      CHECK(f.delivered.back().SerializeAsString().find("203.0.113") == std::string::npos);
    }
    f.Open();
    CHECK(f.Get(id).spec().egress().rate_limit_kbit() == 800);
    CHECK(f.Get(id).spec().egress().allow(0).cidr() == "203.0.113.0/24");
  }
}

TEST_CASE("another tenant's VM is not found for a network change and its node is not asked",
          "[fleet][network][isolation]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  auto theirs = f.core->UpdateVmNetwork(Scope{"globex"}, vm->vm.vm_id(), Locked(), Actor::Tenant());
  CHECK(theirs.status().code() == absl::StatusCode::kNotFound);
  CHECK(theirs.status().message() == "vm " + vm->vm.vm_id() + " not found");
  CHECK(f.core->UpdateVmNetwork(Scope{"globex"}, "vm-nope", Locked(), Actor::Tenant()).status().message() ==
        "vm vm-nope not found");
  CHECK(f.agents.calls().back() == "SpawnVm a " + vm->vm.vm_id());
  CHECK(f.Get(vm->vm.vm_id()).spec().has_egress() == false);
}

TEST_CASE("a network change of a VM on an unreachable node is UNAVAILABLE and changes nothing", "[fleet][network]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  f.clock.Advance(absl::Seconds(4));  // three missed heartbeats
  f.core->RunOnce();
  REQUIRE(f.core->GetVm(Scope{"acme"}, vm->vm.vm_id())->state() == ppn::types::v1::VM_STATE_UNKNOWN);
  auto s = f.core->UpdateVmNetwork(Scope{"acme"}, vm->vm.vm_id(), Locked(), Actor::Tenant());
  CHECK(s.status().code() == absl::StatusCode::kUnavailable);
  CHECK(f.agents.calls().back() == "SpawnVm a " + vm->vm.vm_id());  // the node was not asked
  CHECK_FALSE(f.Get(vm->vm.vm_id()).spec().has_egress());

  SECTION("a node that does not answer leaves the record as it was") {
    f.core->OnHeartbeat(With(Beat("a", 8000), {Running(vm->vm.vm_id(), "acme")}));  // back
    f.agents.FailNetwork("a", absl::UnavailableError("node a is unreachable: deadline exceeded"));
    auto lost = f.core->UpdateVmNetwork(Scope{"acme"}, vm->vm.vm_id(), Locked(), Actor::Tenant());
    CHECK(lost.status().code() == absl::StatusCode::kUnavailable);
    CHECK(f.agents.calls().back() == "UpdateVmNetwork a " + vm->vm.vm_id());
    CHECK_FALSE(f.Get(vm->vm.vm_id()).spec().has_egress());
    for (const std::string& kind : f.Kinds()) CHECK(kind != "vm.network");
  }
}

TEST_CASE("only a running VM's network can be changed and a bad policy is refused first", "[fleet][network]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  const std::string id = vm->vm.vm_id();
  ppn::types::v1::EgressPolicy bad = Locked();
  bad.mutable_allow(0)->set_cidr("10.0.0.0/33");
  auto invalid = f.core->UpdateVmNetwork(Scope{"acme"}, id, bad, Actor::Tenant());
  CHECK(invalid.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(invalid.status().message() == "egress.allow rule \"10.0.0.0/33\" is not an IPv4 address or CIDR");

  SECTION("its node no longer has it") {
    REQUIRE(f.agents.Instances("a").size() == 1);
    f.agents.FailNetwork("a", absl::NotFoundError("vm not on this node"));
    auto gone = f.core->UpdateVmNetwork(Scope{"acme"}, id, Locked(), Actor::Tenant());
    CHECK(gone.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(gone.status().message() == "node a does not run vm " + id);
  }
  SECTION("its node cannot change it") {
    f.agents.FailNetwork("a", absl::FailedPreconditionError("this node runs guests without network isolation"));
    CHECK(f.core->UpdateVmNetwork(Scope{"acme"}, id, Locked(), Actor::Tenant()).status().code() ==
          absl::StatusCode::kFailedPrecondition);
  }
  SECTION("it was destroyed") {
    REQUIRE(f.core->DestroyVm(Scope{"acme"}, id, Actor::Tenant()).ok());
    auto stopped = f.core->UpdateVmNetwork(Scope{"acme"}, id, Locked(), Actor::Tenant());
    CHECK(stopped.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(stopped.status().message() ==
          "vm " + id + " is VM_STATE_DESTROYED; only a running VM's network can be changed");
  }
  for (const std::string& kind : f.Kinds()) CHECK(kind != "vm.network");
  CHECK_FALSE(f.Get(id).spec().has_egress());
}

TEST_CASE("two changes of one VM's network at once: the second is ABORTED", "[fleet][network]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  absl::Status inner;
  f.agents.OnNetwork([&] {
    f.agents.OnNetwork(nullptr);
    inner = f.core->UpdateVmNetwork(Scope{"acme"}, vm->vm.vm_id(), Locked(1), Actor::Tenant()).status();
  });
  REQUIRE(f.core->UpdateVmNetwork(Scope{"acme"}, vm->vm.vm_id(), Locked(2), Actor::Tenant()).ok());
  CHECK(inner.code() == absl::StatusCode::kAborted);
  CHECK(inner.message() == "another change of vm " + vm->vm.vm_id() + "'s network is in progress; retry");
  CHECK(f.Get(vm->vm.vm_id()).spec().egress().rate_limit_kbit() == 2);
  CHECK(f.core->UpdateVmNetwork(Scope{"acme"}, vm->vm.vm_id(), Locked(3), Actor::Tenant()).ok());  // free again
}

TEST_CASE("a VM's traffic counters come from its node's heartbeat", "[fleet][network]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  auto vm = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(vm.ok());
  CHECK_FALSE(f.Get(vm->vm.vm_id()).has_network());
  ppn::host::v1::VmInstance reported = Running(vm->vm.vm_id(), "acme");
  reported.mutable_network()->set_tx_bytes(1234);
  reported.mutable_network()->set_rx_packets(9);
  f.core->OnHeartbeat(With(Beat("a", 8000), {reported}));
  CHECK(f.Get(vm->vm.vm_id()).network().tx_bytes() == 1234);
  CHECK(f.Get(vm->vm.vm_id()).network().rx_packets() == 9);
  CHECK(f.core->ListVms(Scope{"acme"}, {})->vms(0).network().tx_bytes() == 1234);
  f.Open();  // shown, never stored
  CHECK_FALSE(f.Get(vm->vm.vm_id()).has_network());
}

TEST_CASE("ephemeral VMs are destroyed when their TTL expires", "[fleet][ttl]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  ppn::types::v1::VmSpec spec = Spec("short");
  spec.mutable_ttl()->set_seconds(60);
  auto vm = f.core->CreateVm("acme", spec, "");
  REQUIRE(vm.ok());
  CHECK(vm->vm.has_expire_time());
  f.clock.Advance(absl::Seconds(30));
  f.core->OnHeartbeat(With(Beat("a", 8000), {Running(vm->vm.vm_id(), "acme")}));  // keep the node alive
  f.core->RunOnce();
  CHECK(f.core->GetVm(Scope{"acme"}, vm->vm.vm_id())->state() != ppn::types::v1::VM_STATE_DESTROYED);
  f.clock.Advance(absl::Seconds(31));
  f.core->OnHeartbeat(With(Beat("a", 8000), {Running(vm->vm.vm_id(), "acme")}));
  f.core->RunOnce();
  CHECK(f.core->GetVm(Scope{"acme"}, vm->vm.vm_id())->state() == ppn::types::v1::VM_STATE_DESTROYED);
  CHECK(f.agents.vms()["a"].empty());
  CHECK(f.Ledger({"who"}) == std::vector<std::string>{"vm.create " + vm->vm.vm_id(), "vm.expire " + vm->vm.vm_id(),
                                                      "vm.destroy " + vm->vm.vm_id() + " who=ttl"});
}

}  // namespace
}  // namespace ppn::fleet
