#pragma once

// FakeAgentClientFactory: host agents that "spawn" instantly, for fleet unit tests. Each
// node can be told to fail. Thread-safe.

#include <map>
#include <memory>
#include <set>
#include <string>

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
  void FailNode(const std::string& node_id, absl::Status status) {
    absl::MutexLock l(&mu_);
    failures_[node_id] = status;
  }
  // VMs each node holds now.
  std::map<std::string, std::set<std::string>> vms() {
    absl::MutexLock l(&mu_);
    return vms_;
  }
  std::map<std::string, uint64_t> memory() {
    absl::MutexLock l(&mu_);
    return memory_;
  }

 private:
  class Client final : public AgentClient {
   public:
    Client(FakeAgentClientFactory* f, std::string node) : f_(f), node_(std::move(node)) {}
    absl::StatusOr<ppn::host::v1::VmInstance> SpawnVm(const std::string& vm_id, const std::string& tenant_id,
                                                      const ppn::types::v1::VmSpec& spec) override {
      absl::MutexLock l(&f_->mu_);
      if (auto it = f_->failures_.find(node_); it != f_->failures_.end()) return it->second;
      f_->vms_[node_].insert(vm_id);
      f_->memory_[node_] += spec.memory_mib();
      ppn::host::v1::VmInstance vm;
      vm.set_vm_id(vm_id);
      vm.set_tenant_id(tenant_id);
      vm.set_state(ppn::types::v1::VM_STATE_RUNNING);
      *vm.mutable_spec() = spec;
      vm.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
      auto* p = vm.add_forwarded_ports();
      p->set_guest_port(80);
      p->set_host_address("127.0.0.1");
      p->set_host_port(20000 + static_cast<uint32_t>(f_->vms_[node_].size()));
      return vm;
    }
    absl::Status DestroyVm(const std::string& vm_id) override {
      absl::MutexLock l(&f_->mu_);
      if (f_->vms_[node_].erase(vm_id) == 0) return absl::NotFoundError("no such vm");
      return absl::OkStatus();
    }

   private:
    FakeAgentClientFactory* f_;
    std::string node_;
  };

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Client>> clients_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<std::string>> vms_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> memory_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::fleet::testing
