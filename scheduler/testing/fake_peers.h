#pragma once

// Fakes of the scheduler's peers (scheduler/peers.h) for unit tests: a fleet with nodes, VMs
// and a stand-in placement rule, host agents whose migrations a test scripts, and a ledger
// that keeps what it was given. Every call is counted; every fake is thread-safe. Hooks run
// without the fake's lock held, so they may call back into any fake.

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/peers.h"

namespace ppn::scheduler::testing {

using ppn::fleet::v1::Node;
using ppn::fleet::v1::VmRecord;
using ppn::host::v1::VmInstance;

class FakeFleet final : public FleetPeer {
 public:
  void AddNode(const std::string& id, uint64_t available_mib,
               ppn::fleet::v1::NodeState state = ppn::fleet::v1::NODE_STATE_ALIVE) {
    absl::MutexLock l(&mu_);
    Node& n = nodes_[id];
    n.set_node_id(id);
    n.set_agent_address(id + ":7110");
    n.set_state(state);
    n.set_available_memory_mib(available_mib);
  }
  // A RUNNING VM of tenant "acme" on `node`.
  VmRecord& AddVm(const std::string& id, const std::string& node, uint32_t memory_mib = 128) {
    absl::MutexLock l(&mu_);
    VmRecord& r = vms_[id];
    r.set_vm_id(id);
    r.set_tenant_id("acme");
    r.set_node_id(node);
    r.set_state(ppn::types::v1::VM_STATE_RUNNING);
    r.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
    r.mutable_spec()->set_memory_mib(memory_mib);
    r.mutable_spec()->set_image("ppn-test-guest");
    return r;
  }
  VmRecord Vm(const std::string& id) {
    absl::MutexLock l(&mu_);
    return vms_[id];
  }
  // The next `times` calls of RecordMigration fail with `status`.
  void FailRecordMigration(absl::Status status, int times) {
    absl::MutexLock l(&mu_);
    for (int i = 0; i < times; ++i) record_failures_.push_back(status);
  }
  void FailPlacement(absl::Status status) {
    absl::MutexLock l(&mu_);
    placement_failure_ = std::move(status);
  }
  void FailListVms(absl::Status status) {
    absl::MutexLock l(&mu_);
    list_failure_ = std::move(status);
  }
  int record_calls() {
    absl::MutexLock l(&mu_);
    return record_calls_;
  }
  // The excluded nodes of every ExplainPlacement call, in order.
  std::vector<std::vector<NodeId>> placement_queries() {
    absl::MutexLock l(&mu_);
    return placement_queries_;
  }

  // Stands in for the fleet's policy: the alive, not excluded node with the most free memory
  // that fits the VM.
  absl::StatusOr<ppn::fleet::v1::PlacementDecision> ExplainPlacement(const ppn::types::v1::VmSpec& spec,
                                                                     const std::vector<NodeId>& excluded) override {
    absl::MutexLock l(&mu_);
    placement_queries_.push_back(excluded);
    if (!placement_failure_.ok()) return placement_failure_;
    ppn::fleet::v1::PlacementDecision d;
    const Node* best = nullptr;
    for (const auto& [id, n] : nodes_) {
      auto* v = d.add_verdicts();
      v->set_node_id(id);
      bool out = std::find(excluded.begin(), excluded.end(), NodeId(id)) != excluded.end();
      if (out || n.cordoned() || n.state() != ppn::fleet::v1::NODE_STATE_ALIVE ||
          n.available_memory_mib() < spec.memory_mib()) {
        v->set_reason(out ? "excluded" : n.cordoned() ? "cordoned" : "no room");
        continue;
      }
      v->set_eligible(true);
      v->set_reason(absl::StrCat(n.available_memory_mib(), " MiB free"));
      if (best == nullptr || n.available_memory_mib() > best->available_memory_mib()) best = &n;
    }
    if (best != nullptr) d.set_chosen_node_id(best->node_id());
    return d;
  }
  absl::StatusOr<VmRecord> GetVm(const VmId& vm) override {
    absl::MutexLock l(&mu_);
    if (!up_) return absl::UnavailableError("fleet down");
    auto it = vms_.find(vm.value());
    if (it == vms_.end()) return absl::NotFoundError(absl::StrCat("vm ", vm.value(), " not found"));
    return it->second;
  }
  absl::StatusOr<std::vector<VmRecord>> ListVms(const NodeId& node) override {
    absl::MutexLock l(&mu_);
    if (!list_failure_.ok()) return list_failure_;
    std::vector<VmRecord> out;
    for (const auto& [_, r] : vms_) {
      if (node.empty() || r.node_id() == node.value()) out.push_back(r);
    }
    return out;
  }
  absl::StatusOr<std::vector<Node>> ListNodes() override {
    absl::MutexLock l(&mu_);
    std::vector<Node> out;
    for (const auto& [_, n] : nodes_) out.push_back(n);
    return out;
  }
  absl::StatusOr<VmRecord> RecordMigration(const VmId& vm, const NodeId& source, const NodeId& target,
                                           const Ports& ports) override {
    absl::MutexLock l(&mu_);
    ++record_calls_;
    if (!record_failures_.empty()) {
      absl::Status s = record_failures_.front();
      record_failures_.pop_front();
      return s;
    }
    VmRecord& r = vms_[vm.value()];
    if (r.node_id() != source.value()) return absl::AbortedError(absl::StrCat("vm is on ", r.node_id()));
    r.set_node_id(target.value());
    *r.mutable_forwarded_ports() = ports;
    return r;
  }
  absl::StatusOr<VmRecord> SetPin(const VmId& vm, const NodeId& node) override {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm.value());
    if (it == vms_.end()) return absl::NotFoundError(absl::StrCat("vm ", vm.value(), " not found"));
    if (!node.empty() && node.value() != it->second.node_id()) return absl::FailedPreconditionError("not its node");
    it->second.set_pinned_node_id(node.value());
    return it->second;
  }
  absl::StatusOr<Node> CordonNode(const NodeId& node, const std::string& reason) override {
    absl::MutexLock l(&mu_);
    if (!up_) return absl::UnavailableError("fleet down");
    auto it = nodes_.find(node.value());
    if (it == nodes_.end()) return absl::NotFoundError(absl::StrCat("node ", node.value(), " not found"));
    it->second.set_cordoned(true);
    it->second.set_cordon_reason(reason);
    return it->second;
  }
  // Moves the record as the fleet's adoption of a reported VM would.
  void MoveForTest(const std::string& vm, const std::string& node) {
    absl::MutexLock l(&mu_);
    vms_[vm].set_node_id(node);
  }
  void SetUp(bool up) {
    absl::MutexLock l(&mu_);
    up_ = up;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, Node> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, VmRecord> vms_ ABSL_GUARDED_BY(mu_);
  std::deque<absl::Status> record_failures_ ABSL_GUARDED_BY(mu_);
  absl::Status placement_failure_ ABSL_GUARDED_BY(mu_);
  absl::Status list_failure_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<NodeId>> placement_queries_ ABSL_GUARDED_BY(mu_);
  int record_calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool up_ ABSL_GUARDED_BY(mu_) = true;
};

class FakeAgents;

// One node. By default a migration out of it succeeds: it reports DISK, MEMORY and SWITCHOVER,
// then the guest runs on the target and leaves this node.
class FakeAgent final : public AgentPeer {
 public:
  using MigrateOutFn = std::function<absl::StatusOr<MigrationProgress>(const OutgoingMigration&, const ProgressFn&)>;

  FakeAgent(FakeAgents* all, std::string node) : all_(all), node_(std::move(node)) {}

  void Put(const VmInstance& vm) {
    absl::MutexLock l(&mu_);
    vms_[vm.vm_id()] = vm;
  }
  // A copy of `vm` in `state` (and migrated_out, for a paused copy left after sending it).
  void PutVm(const std::string& vm, ppn::types::v1::VmState state, bool migrated_out = false) {
    VmInstance i;
    i.set_vm_id(vm);
    i.set_tenant_id("acme");
    i.set_state(state);
    i.set_migrated_out(migrated_out);
    Put(i);
  }
  void Remove(const std::string& vm) {
    absl::MutexLock l(&mu_);
    vms_.erase(vm);
  }
  std::optional<VmInstance> Get(const std::string& vm) {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm);
    if (it == vms_.end()) return std::nullopt;
    return it->second;
  }
  // While down, every call fails with UNAVAILABLE.
  void SetDown(bool down) {
    absl::MutexLock l(&mu_);
    down_ = down;
  }
  void FailPrepare(absl::Status s) {
    absl::MutexLock l(&mu_);
    prepare_failure_ = std::move(s);
  }
  void SetMigrateOut(MigrateOutFn fn) {
    absl::MutexLock l(&mu_);
    migrate_out_ = std::move(fn);
  }
  // Runs before each ListVms answers, with how many came before it.
  void OnList(std::function<void(int)> fn) {
    absl::MutexLock l(&mu_);
    on_list_ = std::move(fn);
  }
  int destroys() {
    absl::MutexLock l(&mu_);
    return destroys_;
  }
  int resumes() {
    absl::MutexLock l(&mu_);
    return resumes_;
  }
  absl::Duration last_ready_timeout() {
    absl::MutexLock l(&mu_);
    return last_ready_timeout_;
  }
  const std::string& node() const { return node_; }

  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> PrepareIncoming(const IncomingVm& vm) override {
    absl::MutexLock l(&mu_);
    if (down_) return absl::UnavailableError(node_ + " down");
    last_ready_timeout_ = vm.ready_timeout;
    if (!prepare_failure_.ok()) return prepare_failure_;
    // Like an agent that never replaces a copy it holds, whatever its state.
    if (vms_.count(vm.vm.value()) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("vm ", vm.vm.value(), " already exists on node ", node_));
    }
    VmInstance& i = vms_[vm.vm.value()];
    i.set_vm_id(vm.vm.value());
    i.set_tenant_id(vm.tenant.value());
    i.set_state(ppn::types::v1::VM_STATE_MIGRATING);
    i.set_state_message("waiting for an incoming migration");
    ppn::host::v1::PrepareIncomingResponse r;
    r.set_migration_uri("tcp:" + node_ + ":49152");
    r.set_disk_nbd_uri("nbd:" + node_ + ":49153");
    auto* p = r.add_forwarded_ports();
    p->set_guest_port(80);
    p->set_host_port(21000);
    *i.mutable_forwarded_ports() = r.forwarded_ports();
    return r;
  }
  absl::StatusOr<MigrationProgress> MigrateOut(const OutgoingMigration& m, const ProgressFn& progress) override;
  absl::StatusOr<std::vector<VmInstance>> ListVms() override {
    std::function<void(int)> hook;
    int n;
    {
      absl::MutexLock l(&mu_);
      hook = on_list_;
      n = lists_++;
    }
    if (hook) hook(n);
    absl::MutexLock l(&mu_);
    if (down_) return absl::UnavailableError(node_ + " down");
    std::vector<VmInstance> out;
    for (const auto& [_, v] : vms_) out.push_back(v);
    return out;
  }
  absl::Status DestroyVm(const VmId& vm) override {
    absl::MutexLock l(&mu_);
    if (down_) return absl::UnavailableError(node_ + " down");
    ++destroys_;
    if (vms_.erase(vm.value()) == 0) return absl::NotFoundError("no such vm");
    return absl::OkStatus();
  }
  absl::StatusOr<VmInstance> ResumeVm(const VmId& vm) override {
    absl::MutexLock l(&mu_);
    if (down_) return absl::UnavailableError(node_ + " down");
    auto it = vms_.find(vm.value());
    if (it == vms_.end()) return absl::NotFoundError("no such vm");
    if (!it->second.migrated_out()) return absl::FailedPreconditionError("not paused");
    ++resumes_;
    it->second.set_state(ppn::types::v1::VM_STATE_RUNNING);
    it->second.set_migrated_out(false);
    return it->second;
  }

 private:
  FakeAgents* const all_;
  const std::string node_;
  absl::Mutex mu_;
  std::map<std::string, VmInstance> vms_ ABSL_GUARDED_BY(mu_);
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status prepare_failure_ ABSL_GUARDED_BY(mu_);
  MigrateOutFn migrate_out_ ABSL_GUARDED_BY(mu_);
  std::function<void(int)> on_list_ ABSL_GUARDED_BY(mu_);
  int lists_ ABSL_GUARDED_BY(mu_) = 0;
  int destroys_ ABSL_GUARDED_BY(mu_) = 0;
  int resumes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration last_ready_timeout_ ABSL_GUARDED_BY(mu_);
};

class FakeAgents final : public AgentPeers {
 public:
  AgentPeer* ForNode(const NodeId& node, const std::string&) override { return &Node(node.value()); }
  FakeAgent& Node(const std::string& node) {
    absl::MutexLock l(&mu_);
    auto& a = agents_[node];
    if (a == nullptr) a = std::make_unique<FakeAgent>(this, node);
    return *a;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<FakeAgent>> agents_ ABSL_GUARDED_BY(mu_);
};

inline MigrationProgress Report(const OutgoingMigration& m, const std::string& source,
                                ppn::types::v1::MigrationPhase phase) {
  MigrationProgress p;
  p.set_vm_id(m.vm.value());
  p.set_source_node_id(source);
  p.set_target_node_id(m.target.value());
  p.set_phase(phase);
  return p;
}

inline absl::StatusOr<MigrationProgress> FakeAgent::MigrateOut(const OutgoingMigration& m, const ProgressFn& progress) {
  MigrateOutFn fn;
  {
    absl::MutexLock l(&mu_);
    if (down_) return absl::UnavailableError(node_ + " down");
    if (vms_.count(m.vm.value()) == 0) return absl::NotFoundError("no such vm");
    fn = migrate_out_;
  }
  if (fn) return fn(m, progress);
  for (auto phase : {ppn::types::v1::MIGRATION_PHASE_DISK, ppn::types::v1::MIGRATION_PHASE_MEMORY,
                     ppn::types::v1::MIGRATION_PHASE_SWITCHOVER}) {
    if (!progress(Report(m, node_, phase))) return absl::CancelledError("cancelled");
  }
  all_->Node(m.target.value()).PutVm(m.vm.value(), ppn::types::v1::VM_STATE_RUNNING);
  Remove(m.vm.value());
  MigrationProgress done = Report(m, node_, ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  done.set_transferred_bytes(4096);
  return done;
}

class FakeLedger final : public LedgerPeer {
 public:
  absl::Status Append(const ppn::ledger::v1::AppendRequest& entry) override {
    absl::MutexLock l(&mu_);
    entries_.push_back(entry);
    return absl::OkStatus();
  }
  std::vector<ppn::ledger::v1::AppendRequest> entries() {
    absl::MutexLock l(&mu_);
    return entries_;
  }
  std::vector<ppn::ledger::v1::AppendRequest> OfKind(const std::string& kind) {
    absl::MutexLock l(&mu_);
    std::vector<ppn::ledger::v1::AppendRequest> out;
    for (const auto& e : entries_) {
      if (e.kind() == kind) out.push_back(e);
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<ppn::ledger::v1::AppendRequest> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::scheduler::testing
