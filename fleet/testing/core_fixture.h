#pragma once

// CoreFixture: a FleetCore over a temp store, fake agents, a FakeClock and a ledger spool
// whose deliveries the test reads, for fleet unit tests. Not thread-safe (tests drive it).

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/ledger_outbox.h"
#include "common/random.h"
#include "fleet/fleet_core.h"
#include "fleet/testing/fake_agent_client.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::fleet::testing {

inline ppn::types::v1::VmSpec Spec(const std::string& name, uint32_t memory = 256) {
  ppn::types::v1::VmSpec s;
  s.set_display_name(name);
  s.set_vcpus(1);
  s.set_memory_mib(memory);
  s.set_image("debian-12");
  return s;
}

inline ppn::host::v1::Heartbeat Beat(const std::string& node, uint64_t available,
                                     ppn::types::v1::KvmSupport kvm = ppn::types::v1::KVM_SUPPORT_NONE) {
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id(node);
  hb.set_available_memory_mib(available);
  hb.set_total_memory_mib(available + 512);
  hb.set_kvm(kvm);
  hb.mutable_interval()->set_seconds(1);
  return hb;
}

// A VM as a node reports it.
inline ppn::host::v1::VmInstance Running(const std::string& vm_id, const std::string& tenant,
                                         ppn::types::v1::VmState state = ppn::types::v1::VM_STATE_RUNNING) {
  ppn::host::v1::VmInstance vm;
  vm.set_vm_id(vm_id);
  vm.set_tenant_id(tenant);
  vm.set_state(state);
  return vm;
}

// The copy a completed outgoing migration leaves paused on its source.
inline ppn::host::v1::VmInstance PausedCopy(const std::string& vm_id, const std::string& tenant) {
  ppn::host::v1::VmInstance vm = Running(vm_id, tenant, ppn::types::v1::VM_STATE_MIGRATING);
  vm.set_migrated_out(true);
  vm.set_state_message("paused after migrating out");
  return vm;
}

inline ppn::host::v1::Heartbeat With(ppn::host::v1::Heartbeat hb, std::vector<ppn::host::v1::VmInstance> vms) {
  for (auto& vm : vms) *hb.add_vms() = std::move(vm);
  return hb;
}

struct CoreFixture {
  ppn::testing::TempDir dir;
  ppn::testing::FakeClock clock;
  FakeAgentClientFactory agents;
  absl::Mutex mu;
  std::vector<ppn::ledger::v1::AppendRequest> delivered;  // guarded by mu
  std::unique_ptr<LedgerOutbox> outbox;
  std::unique_ptr<VmStore> store;
  std::unique_ptr<FleetCore> core;
  // What Open() starts the fleet with; a test may change it and Open() again.
  FleetCore::Options options{absl::Seconds(1)};

  CoreFixture() { Open(); }
  explicit CoreFixture(FleetCore::Options o) : options(std::move(o)) { Open(); }
  // (Re)starts the fleet on the same store and spool, as after a crash.
  void Open() {
    core.reset();
    store.reset();
    outbox.reset();
    outbox = *LedgerOutbox::Open(dir.File("fleet.db.ledger-spool"), "fleet",
                                 [this](const ppn::ledger::v1::AppendRequest& r) {
                                   absl::MutexLock l(&mu);
                                   delivered.push_back(r);
                                   return absl::OkStatus();
                                 });
    store = *VmStore::Open(dir.File("fleet.db"));
    core = std::make_unique<FleetCore>(
        FleetCore::Deps{store.get(), &agents, &clock, OpenSslRandom::Get(), outbox.get()}, options);
    if (!core->Load().ok()) std::abort();
  }
  void Nodes(std::vector<ppn::host::v1::Heartbeat> beats) {
    for (const auto& hb : beats) {
      core->AddNode(hb.node_id(), hb.node_id() + ":1");
      core->OnHeartbeat(hb);
    }
  }
  // Ledger entries delivered so far, as "kind subject k=v ..." for the attributes asked.
  std::vector<std::string> Ledger(const std::vector<std::string>& attributes = {}) {
    outbox->DeliverOnce();
    absl::MutexLock l(&mu);
    std::vector<std::string> out;
    for (const auto& e : delivered) {
      std::string line = absl::StrCat(e.kind(), " ", e.subject());
      for (const std::string& a : attributes) {
        auto it = e.attributes().find(a);
        if (it != e.attributes().end()) absl::StrAppend(&line, " ", a, "=", it->second);
      }
      out.push_back(line);
    }
    return out;
  }
  std::vector<std::string> Kinds() {
    std::vector<std::string> kinds;
    for (const std::string& line : Ledger()) kinds.push_back(line.substr(0, line.find(' ')));
    return kinds;
  }
  ppn::fleet::v1::VmRecord Get(const std::string& vm_id) { return *core->GetVm(Scope{}, vm_id); }
  uint64_t Reserved(const std::string& node_id) {
    for (const auto& n : core->ListNodes()) {
      if (n.node_id() == node_id) return n.reserved_memory_mib();
    }
    return 0;
  }
};

}  // namespace ppn::fleet::testing
