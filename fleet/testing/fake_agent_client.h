#pragma once

// FakeAgentClientFactory: host agents that "spawn" instantly, for fleet unit tests. Each node
// can be told to fail a call, to lose the answer of a spawn that did happen, or to run a hook
// while a spawn is in flight; every call is recorded, and the egress policy each VM was last
// given. Thread-safe.

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "fleet/agent_client.h"

namespace ppn::fleet::testing {

class FakeAgentClientFactory final : public AgentClientFactory {
 public:
  AgentClient* ForNode(const std::string& node_id, const std::string&) override {
    absl::MutexLock l(&mu_);
    auto& c = clients_[node_id];
    if (c == nullptr) c = std::make_unique<Client>(this, node_id);
    return c.get();
  }
  // SpawnVm on `node_id` answers `status` and starts nothing (OK clears it).
  void FailNode(const std::string& node_id, absl::Status status) {
    absl::MutexLock l(&mu_);
    failures_[node_id] = status;
  }
  // SpawnVm on `node_id` starts the VM but the caller gets `status` (a lost answer).
  void LoseSpawnAnswers(const std::string& node_id, absl::Status status) {
    absl::MutexLock l(&mu_);
    lost_answers_[node_id] = status;
  }
  // DestroyVm on `node_id` answers `status` and destroys nothing (OK clears it).
  void FailDestroy(const std::string& node_id, absl::Status status) {
    absl::MutexLock l(&mu_);
    destroy_failures_[node_id] = status;
  }
  // UpdateVmNetwork on `node_id` answers `status` and changes nothing (OK clears it).
  void FailNetwork(const std::string& node_id, absl::Status status) {
    absl::MutexLock l(&mu_);
    network_failures_[node_id] = status;
  }
  // Runs `hook` (outside the fake's lock) inside every UpdateVmNetwork, before it answers.
  void OnNetwork(std::function<void()> hook) {
    absl::MutexLock l(&mu_);
    on_network_ = std::move(hook);
  }
  // The policy the VM on `node_id` enforces now (from its spawn or its last UpdateVmNetwork),
  // or nullopt if the node does not have it.
  std::optional<ppn::types::v1::EgressPolicy> Egress(const std::string& node_id, const std::string& vm_id) {
    absl::MutexLock l(&mu_);
    auto node = instances_.find(node_id);
    if (node == instances_.end()) return std::nullopt;
    auto vm = node->second.find(vm_id);
    if (vm == node->second.end()) return std::nullopt;
    return vm->second.spec().egress();
  }
  // Runs `hook` (outside the fake's lock) inside every SpawnVm, before it answers.
  void OnSpawn(std::function<void()> hook) {
    absl::MutexLock l(&mu_);
    on_spawn_ = std::move(hook);
  }
  // Puts a VM on a node as if it had been spawned there (e.g. a migration target).
  void Place(const std::string& node_id, ppn::host::v1::VmInstance vm) {
    absl::MutexLock l(&mu_);
    instances_[node_id][vm.vm_id()] = vm;
  }
  // VMs each node holds now.
  std::map<std::string, std::set<std::string>> vms() {
    absl::MutexLock l(&mu_);
    std::map<std::string, std::set<std::string>> out;
    for (const auto& [node, vms] : instances_) {
      for (const auto& [id, _] : vms) out[node].insert(id);
    }
    return out;
  }
  // What the node would report in a heartbeat.
  std::vector<ppn::host::v1::VmInstance> Instances(const std::string& node_id) {
    absl::MutexLock l(&mu_);
    std::vector<ppn::host::v1::VmInstance> out;
    for (const auto& [_, vm] : instances_[node_id]) out.push_back(vm);
    return out;
  }
  // What vm_id's console log holds (GetConsoleOutput reads it on any node that has the VM).
  void SetConsole(const std::string& vm_id, std::string log) {
    absl::MutexLock l(&mu_);
    consoles_[vm_id] = std::move(log);
  }
  std::map<std::string, uint64_t> memory() {
    absl::MutexLock l(&mu_);
    return memory_;
  }
  // Every call so far, as "Op node vm" ("SpawnVm a vm-1", "DestroyVm b vm-1", "ResumeVm a vm-1",
  // "UpdateVmNetwork a vm-1").
  // The last SetNetworkPeers a node got for a network.
  std::optional<ppn::host::v1::SetNetworkPeersRequest> peers(const std::string& node, const std::string& network) {
    absl::MutexLock l(&mu_);
    auto it = peers_.find(absl::StrCat(node, " ", network));
    if (it == peers_.end()) return std::nullopt;
    return it->second;
  }
  std::vector<std::string> calls() {
    absl::MutexLock l(&mu_);
    return calls_;
  }

 private:
  class Client final : public AgentClient {
   public:
    Client(FakeAgentClientFactory* f, std::string node) : f_(f), node_(std::move(node)) {}
    absl::StatusOr<ppn::host::v1::VmInstance> SpawnVm(
        const VmId& vm_id, const TenantId& tenant_id, const ppn::types::v1::VmSpec& spec,
        const google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>& nics) override {
      std::function<void()> hook;
      {
        absl::MutexLock l(&f_->mu_);
        hook = f_->on_spawn_;
      }
      if (hook) hook();
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("SpawnVm ", node_, " ", vm_id.value()));
      if (auto it = f_->failures_.find(node_); it != f_->failures_.end() && !it->second.ok()) return it->second;
      auto& vms = f_->instances_[node_];
      if (auto existing = vms.find(vm_id.value()); existing != vms.end()) return existing->second;  // idempotent
      f_->memory_[node_] += spec.memory_mib();
      ppn::host::v1::VmInstance vm;
      vm.set_vm_id(vm_id.value());
      vm.set_tenant_id(tenant_id.value());
      vm.set_state(ppn::types::v1::VM_STATE_RUNNING);
      *vm.mutable_spec() = spec;
      vm.mutable_spec()->clear_user_data();
      *vm.mutable_private_nics() = nics;
      vm.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
      // One host port per port forward the spec asks for (guest port 80 when it asks none),
      // from a per-node counter so that no two VMs of a node share one.
      std::vector<ppn::types::v1::PortForward> forwards(spec.port_forwards().begin(), spec.port_forwards().end());
      if (forwards.empty()) forwards.emplace_back().set_guest_port(80);
      for (const auto& f : forwards) {
        auto* p = vm.add_forwarded_ports();
        p->set_guest_port(f.guest_port());
        p->set_protocol(f.protocol());
        p->set_host_address("127.0.0.1");
        p->set_host_port(20000 + f_->next_port_[node_]++);
      }
      vms[vm_id.value()] = vm;
      if (auto it = f_->lost_answers_.find(node_); it != f_->lost_answers_.end() && !it->second.ok()) {
        return it->second;
      }
      return vm;
    }
    absl::Status DestroyVm(const VmId& vm_id) override {
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("DestroyVm ", node_, " ", vm_id.value()));
      if (auto it = f_->destroy_failures_.find(node_); it != f_->destroy_failures_.end() && !it->second.ok()) {
        return it->second;
      }
      if (f_->instances_[node_].erase(vm_id.value()) == 0) return absl::NotFoundError("no such vm");
      return absl::OkStatus();
    }
    absl::StatusOr<ppn::host::v1::VmInstance> ResumeVm(const VmId& vm_id) override {
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("ResumeVm ", node_, " ", vm_id.value()));
      auto& vms = f_->instances_[node_];
      auto it = vms.find(vm_id.value());
      if (it == vms.end()) return absl::NotFoundError("no such vm");
      if (!it->second.migrated_out()) return absl::FailedPreconditionError("not paused");
      it->second.set_migrated_out(false);
      it->second.set_state(ppn::types::v1::VM_STATE_RUNNING);
      it->second.clear_state_message();
      return it->second;
    }
    absl::StatusOr<ppn::host::v1::VmInstance> StopVm(const VmId& vm_id, absl::Duration) override {
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("StopVm ", node_, " ", vm_id.value()));
      auto& vms = f_->instances_[node_];
      auto it = vms.find(vm_id.value());
      if (it == vms.end()) return absl::NotFoundError("no such vm");
      if (it->second.state() != ppn::types::v1::VM_STATE_RUNNING &&
          it->second.state() != ppn::types::v1::VM_STATE_STOPPED) {
        return absl::FailedPreconditionError("not running");
      }
      if (it->second.state() == ppn::types::v1::VM_STATE_RUNNING) f_->memory_[node_] -= it->second.spec().memory_mib();
      it->second.set_state(ppn::types::v1::VM_STATE_STOPPED);
      it->second.clear_ready_time();
      return it->second;
    }
    absl::StatusOr<ppn::host::v1::VmInstance> StartVm(const VmId& vm_id) override {
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("StartVm ", node_, " ", vm_id.value()));
      auto& vms = f_->instances_[node_];
      auto it = vms.find(vm_id.value());
      if (it == vms.end()) return absl::NotFoundError("no such vm");
      if (it->second.state() == ppn::types::v1::VM_STATE_STOPPED) {
        f_->memory_[node_] += it->second.spec().memory_mib();
        it->second.set_state(ppn::types::v1::VM_STATE_STARTING);
      }
      return it->second;
    }
    absl::StatusOr<ppn::host::v1::VmInstance> RebootVm(const VmId& vm_id, absl::Duration, std::string* how) override {
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("RebootVm ", node_, " ", vm_id.value()));
      auto& vms = f_->instances_[node_];
      auto it = vms.find(vm_id.value());
      if (it == vms.end()) return absl::NotFoundError("no such vm");
      if (it->second.state() != ppn::types::v1::VM_STATE_RUNNING &&
          it->second.state() != ppn::types::v1::VM_STATE_STARTING) {
        return absl::FailedPreconditionError("not running");
      }
      it->second.set_state(ppn::types::v1::VM_STATE_STARTING);
      *how = "the guest powered off (ACPI) and booted again";
      return it->second;
    }
    absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> GetConsoleOutput(const VmId& vm_id, uint64_t offset,
                                                                             uint32_t max_bytes) override {
      absl::MutexLock l(&f_->mu_);
      if (f_->instances_[node_].count(vm_id.value()) == 0) return absl::NotFoundError("no such vm");
      const std::string& log = f_->consoles_[vm_id.value()];
      ppn::host::v1::GetConsoleOutputResponse r;
      uint64_t from = std::min<uint64_t>(offset, log.size());
      r.set_data(log.substr(from, max_bytes == 0 ? 65536 : max_bytes));
      r.set_next_offset(from + r.data().size());
      return r;
    }
    absl::Status SetNetworkPeers(const ppn::host::v1::SetNetworkPeersRequest& request) override {
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("SetNetworkPeers ", node_, " ", request.network_id()));
      f_->peers_[absl::StrCat(node_, " ", request.network_id())] = request;
      return absl::OkStatus();
    }

    absl::StatusOr<ppn::host::v1::VmInstance> UpdateVmNetwork(const VmId& vm_id,
                                                              const ppn::types::v1::EgressPolicy& egress) override {
      std::function<void()> hook;
      {
        absl::MutexLock l(&f_->mu_);
        hook = f_->on_network_;
      }
      if (hook) hook();
      absl::MutexLock l(&f_->mu_);
      f_->calls_.push_back(absl::StrCat("UpdateVmNetwork ", node_, " ", vm_id.value()));
      if (auto it = f_->network_failures_.find(node_); it != f_->network_failures_.end() && !it->second.ok()) {
        return it->second;
      }
      auto& vms = f_->instances_[node_];
      auto it = vms.find(vm_id.value());
      if (it == vms.end()) return absl::NotFoundError("no such vm");
      *it->second.mutable_spec()->mutable_egress() = egress;
      return it->second;
    }

   private:
    FakeAgentClientFactory* f_;
    std::string node_;
  };

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Client>> clients_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> lost_answers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> destroy_failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> network_failures_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_spawn_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_network_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, ppn::host::v1::VmInstance>> instances_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> memory_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint32_t> next_port_ ABSL_GUARDED_BY(mu_);  // by node
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> consoles_ ABSL_GUARDED_BY(mu_);                         // by VM
  std::map<std::string, ppn::host::v1::SetNetworkPeersRequest> peers_ ABSL_GUARDED_BY(mu_);  // "node network"
};

}  // namespace ppn::fleet::testing
