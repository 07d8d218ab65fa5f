#include "fleet/fleet_core.h"

#include <atomic>
#include <thread>

#include "catch2/catch.hpp"
#include "fleet/testing/fake_agent_client.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::VmRecord;

ppn::types::v1::VmSpec Spec(const std::string& name, uint32_t memory = 256) {
  ppn::types::v1::VmSpec s;
  s.set_display_name(name);
  s.set_vcpus(1);
  s.set_memory_mib(memory);
  s.set_image("debian-12");
  return s;
}

ppn::host::v1::Heartbeat Beat(const std::string& node, uint64_t available,
                              ppn::types::v1::KvmSupport kvm = ppn::types::v1::KVM_SUPPORT_NONE) {
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id(node);
  hb.set_available_memory_mib(available);
  hb.set_total_memory_mib(available + 512);
  hb.set_kvm(kvm);
  hb.mutable_interval()->set_seconds(1);
  return hb;
}

struct Fixture {
  ppn::testing::TempDir dir;
  ppn::testing::FakeClock clock;
  testing::FakeAgentClientFactory agents;
  std::unique_ptr<VmStore> store;
  std::unique_ptr<FleetCore> core;

  Fixture() { Open(); }
  void Open() {
    core.reset();
    store.reset();
    store = *VmStore::Open(dir.File("fleet.db"));
    core = std::make_unique<FleetCore>(FleetCore::Deps{store.get(), &agents, &clock, OpenSslRandom::Get()},
                                       FleetCore::Options{absl::Seconds(1)});
    REQUIRE(core->Load().ok());
  }
  void Nodes(std::vector<ppn::host::v1::Heartbeat> beats) {
    for (const auto& hb : beats) {
      core->AddNode(hb.node_id(), hb.node_id() + ":1");
      core->OnHeartbeat(hb);
    }
  }
};

TEST_CASE("50 concurrent creates against room for 10 create exactly 10 and overcommit nothing", "[fleet][placement]") {
  Fixture f;
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
}

TEST_CASE("a failed spawn releases the reservation and tries the next node once", "[fleet]") {
  Fixture f;
  f.Nodes({Beat("big", 4000), Beat("small", 1000)});
  f.agents.FailNode("big", absl::UnavailableError("node big is unreachable: connection refused"));
  auto r = f.core->CreateVm("acme", Spec("web"), "");
  REQUIRE(r.ok());
  CHECK(r->vm.node_id() == "small");
  f.agents.FailNode("small", absl::FailedPreconditionError("QEMU did not start"));
  auto both = f.core->CreateVm("acme", Spec("web2"), "");
  CHECK(both.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(both.status().message() ==
        "spawn on big failed: node big is unreachable: connection refused; spawn on small failed: QEMU did not start");
  auto list = f.core->ListVms(Scope{"acme"}, {});
  REQUIRE(list.ok());
  CHECK(list->vms_size() == 1);  // the failed VM left no record
}

TEST_CASE("tenants see only their own VMs and names, ids and retries behave", "[fleet][isolation]") {
  Fixture f;
  f.Nodes({Beat("a", 8000)});
  auto mine = f.core->CreateVm("acme", Spec("web"), "req-1");
  REQUIRE(mine.ok());
  CHECK(f.core->GetVm(Scope{"acme"}, mine->vm.vm_id()).ok());
  auto theirs = f.core->GetVm(Scope{"globex"}, mine->vm.vm_id());
  CHECK(theirs.status().code() == absl::StatusCode::kNotFound);
  // Exactly what a VM that does not exist gets: nothing reveals it is someone else's.
  CHECK(std::string(theirs.status().message()) == "vm " + mine->vm.vm_id() + " not found");
  CHECK(std::string(f.core->GetVm(Scope{"globex"}, "vm-nope").status().message()) == "vm vm-nope not found");
  CHECK(f.core->DestroyVm(Scope{"globex"}, mine->vm.vm_id()).status().code() == absl::StatusCode::kNotFound);
  CHECK(f.core->ListVms(Scope{"globex"}, {})->vms_size() == 0);
  CHECK(f.core->ListVms(Scope{}, {})->vms_size() == 1);
  CHECK(f.core->CreateVm("acme", Spec("web"), "").status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(f.core->CreateVm("globex", Spec("web"), "").ok());  // names are per tenant
  auto retry = f.core->CreateVm("acme", Spec("web"), "req-1");
  REQUIRE(retry.ok());
  CHECK(retry->vm.vm_id() == mine->vm.vm_id());
  CHECK(f.core->CreateVm("acme", Spec("Bad Name"), "").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("the registry survives a restart and reconciles with heartbeats", "[fleet][restart]") {
  Fixture f;
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
  ppn::host::v1::Heartbeat hb = Beat("a", 7000);
  auto* w = hb.add_vms();
  w->set_vm_id(web->vm.vm_id());
  w->set_tenant_id("acme");
  w->set_state(ppn::types::v1::VM_STATE_RUNNING);
  auto* stray = hb.add_vms();
  stray->set_vm_id("vm-stray");
  stray->set_tenant_id("initech");
  stray->set_state(ppn::types::v1::VM_STATE_RUNNING);
  f.core->OnHeartbeat(hb);
  CHECK(f.core->GetVm(Scope{"initech"}, "vm-stray")->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(f.core->GetVm(Scope{"acme"}, "vm-stray").status().code() == absl::StatusCode::kNotFound);
  CHECK(f.core->GetVm(Scope{"globex"}, db->vm.vm_id())->state() == ppn::types::v1::VM_STATE_LOST);

  SECTION("a silent node's VMs become UNKNOWN, never dropped") {
    f.clock.Advance(absl::Seconds(4));
    f.core->RunOnce();
    CHECK(f.core->ListNodes()[0].state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE);
    auto v = f.core->GetVm(Scope{"acme"}, web->vm.vm_id());
    CHECK(v->state() == ppn::types::v1::VM_STATE_UNKNOWN);
    CHECK(v->state_message() == "node a is unreachable");
    CHECK(f.core->DestroyVm(Scope{"acme"}, web->vm.vm_id()).status().code() == absl::StatusCode::kUnavailable);
    f.core->OnHeartbeat(hb);
    CHECK(f.core->GetVm(Scope{"acme"}, web->vm.vm_id())->state() == ppn::types::v1::VM_STATE_RUNNING);
  }
}

TEST_CASE("ephemeral VMs are destroyed when their TTL expires", "[fleet][ttl]") {
  Fixture f;
  f.Nodes({Beat("a", 8000)});
  ppn::types::v1::VmSpec spec = Spec("short");
  spec.mutable_ttl()->set_seconds(60);
  auto vm = f.core->CreateVm("acme", spec, "");
  REQUIRE(vm.ok());
  CHECK(vm->vm.has_expire_time());
  f.clock.Advance(absl::Seconds(30));
  f.core->OnHeartbeat(Beat("a", 8000));  // keep the node alive
  f.core->RunOnce();
  CHECK(f.core->GetVm(Scope{"acme"}, vm->vm.vm_id())->state() != ppn::types::v1::VM_STATE_STOPPED);
  f.clock.Advance(absl::Seconds(31));
  ppn::host::v1::Heartbeat hb = Beat("a", 8000);
  auto* v = hb.add_vms();
  v->set_vm_id(vm->vm.vm_id());
  v->set_tenant_id("acme");
  v->set_state(ppn::types::v1::VM_STATE_RUNNING);
  f.core->OnHeartbeat(hb);
  f.core->RunOnce();
  CHECK(f.core->GetVm(Scope{"acme"}, vm->vm.vm_id())->state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(f.agents.vms()["a"].empty());
}

}  // namespace
}  // namespace ppn::fleet
