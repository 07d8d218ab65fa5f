#include "fleet/reconciler.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/vm_spec.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::VmRecord;
using ppn::host::v1::VmInstance;
using ppn::types::v1::VmState;

// True if `node_id` may hold an old copy of `r` that a fresh-disk start left behind (R0).
bool LeftBehind(const VmRecord& r, const std::string& node_id) {
  return r.node_id() != node_id && r.state() != ppn::types::v1::VM_STATE_DESTROYED &&
         std::find(r.left_behind_node_ids().begin(), r.left_behind_node_ids().end(), node_id) !=
             r.left_behind_node_ids().end();
}

// A node may ask for any interval up to this; longer would keep a dead node ALIVE for hours.
constexpr absl::Duration kMaxInterval = absl::Minutes(10);

bool Troubled(VmState s) {
  return s == ppn::types::v1::VM_STATE_UNKNOWN || s == ppn::types::v1::VM_STATE_LOST ||
         s == ppn::types::v1::VM_STATE_FAILED;
}

// The state a report means for the record: a paused copy is still MIGRATING.
VmState StateOf(const VmInstance& vm) { return vm.migrated_out() ? ppn::types::v1::VM_STATE_MIGRATING : vm.state(); }

// Copies what a node says about its VM into the record; true if anything changed.
bool TakeReport(VmRecord& r, const VmInstance& vm) {
  VmState state = StateOf(vm);
  bool changed = r.state() != state || r.state_message() != vm.state_message() || r.accelerator() != vm.accelerator() ||
                 r.forwarded_ports_size() != vm.forwarded_ports_size() ||
                 r.ready_time().SerializeAsString() != vm.ready_time().SerializeAsString() ||
                 r.boot_duration().SerializeAsString() != vm.boot_duration().SerializeAsString();
  for (int i = 0; !changed && i < vm.forwarded_ports_size(); ++i) {
    changed = r.forwarded_ports(i).SerializeAsString() != vm.forwarded_ports(i).SerializeAsString();
  }
  if (!changed) return false;
  r.set_state(state);
  r.set_state_message(vm.state_message());
  r.set_accelerator(vm.accelerator());
  *r.mutable_forwarded_ports() = vm.forwarded_ports();
  // The node's word on when its guest became ready; a node that does not say (an older agent,
  // a copy that arrived by migration) leaves what the record had.
  if (vm.has_ready_time() && IsValidTimestamp(vm.ready_time())) {
    *r.mutable_ready_time() = vm.ready_time();
    if (vm.has_boot_duration() && IsValidDuration(vm.boot_duration())) *r.mutable_boot_duration() = vm.boot_duration();
  }
  return true;
}

// What is kept of a reported VM (no spec: it can be large, and only the record needs it), its
// traffic counters included (shown with the record, never stored: they change every beat),
// with every enum from the wire checked: unknown values become UNSPECIFIED.
Reported Summary(const VmInstance& vm) {
  Reported r;
  r.vm.set_vm_id(vm.vm_id());
  r.vm.set_tenant_id(vm.tenant_id());
  r.vm.set_state(vm.state());
  r.vm.set_state_message(vm.state_message());
  r.vm.set_migrated_out(vm.migrated_out());
  *r.vm.mutable_ready_time() = vm.ready_time();
  *r.vm.mutable_boot_duration() = vm.boot_duration();
  r.vm.set_accelerator(ppn::types::v1::Accelerator_IsValid(vm.accelerator()) ? vm.accelerator()
                                                                             : ppn::types::v1::ACCELERATOR_UNSPECIFIED);
  *r.vm.mutable_forwarded_ports() = vm.forwarded_ports();
  *r.vm.mutable_network() = vm.network();
  if (vm.has_memory()) *r.vm.mutable_memory() = vm.memory();
  for (auto& port : *r.vm.mutable_forwarded_ports()) {
    if (!ppn::types::v1::Protocol_IsValid(port.protocol())) port.set_protocol(ppn::types::v1::PROTOCOL_UNSPECIFIED);
  }
  return r;
}

// A VM reported in a state this fleet does not know is left out, as if not reported.
bool Usable(const std::string& node_id, const VmInstance& vm) {
  if (!vm.vm_id().empty() && vm.state() != ppn::types::v1::VM_STATE_UNSPECIFIED &&
      ppn::types::v1::VmState_IsValid(vm.state())) {
    return true;
  }
  spdlog::warn("vm.bad_report node={} vm={} state={}", node_id, LogValue(vm.vm_id()), static_cast<int>(vm.state()));
  return false;
}

}  // namespace

bool Reconciler::InStartupGrace(absl::Time now) const {
  if (now - started_ >= 3 * interval_) return false;
  for (const auto& [_, n] : registry_->nodes()) {
    if (n.registered() && !n.revoked && n.node.state() == ppn::fleet::v1::NODE_STATE_JOINING) return true;
  }
  return false;
}

void Reconciler::ApplyCapacity(NodeEntry& n, const ppn::host::v1::Heartbeat& hb, absl::Time now) {
  if (!n.revoked) {
    if (n.node.state() != ppn::fleet::v1::NODE_STATE_ALIVE) spdlog::info("node.alive node={}", hb.node_id());
    n.node.set_state(ppn::fleet::v1::NODE_STATE_ALIVE);
  }
  n.last_heartbeat = now;
  absl::Duration interval;
  if (hb.has_interval()) {
    // From the wire: checked before any conversion, and bounded.
    if (ToAbslDuration(hb.interval(), "interval", &interval).ok() && interval > absl::ZeroDuration()) {
      n.interval = std::min(interval, kMaxInterval);
    } else {
      spdlog::warn("node.bad_interval node={} seconds={}", hb.node_id(), hb.interval().seconds());
    }
  }
  n.node.set_total_memory_mib(hb.total_memory_mib());
  n.node.set_available_memory_mib(hb.available_memory_mib());
  n.node.set_reclaimed_memory_mib(hb.reclaimed_memory_mib());
  n.node.set_cpus(hb.cpus());
  n.node.set_load_average(hb.load_average());
  n.node.set_kvm(ppn::types::v1::KvmSupport_IsValid(hb.kvm()) ? hb.kvm() : ppn::types::v1::KVM_SUPPORT_UNSPECIFIED);
  *n.node.mutable_capabilities() = hb.capabilities();
  n.node.set_vm_count(hb.vms_size());
  n.node.set_disk_total_mib(hb.disk_total_mib());
  n.node.set_disk_available_mib(hb.disk_available_mib());
  *n.node.mutable_last_heartbeat_time() = ToProtoTimestamp(now);
  // What the node says of its tunnel and containment, shown as it is (the fleet acts on neither).
  if (hb.has_mesh()) {
    *n.node.mutable_mesh() = hb.mesh();
  } else {
    n.node.clear_mesh();
  }
  *n.node.mutable_warnings() = hb.warnings();
  registry_->SetImages(hb.node_id(), {hb.images().begin(), hb.images().end()});
}

std::vector<NodeAction> Reconciler::ApplyHeartbeat(const ppn::host::v1::Heartbeat& hb, absl::Time now) {
  std::vector<NodeAction> actions;
  NodeEntry* n = registry_->Node(hb.node_id());
  if (n == nullptr || !n->registered()) return actions;  // only registered nodes report
  const std::string node_id = hb.node_id();

  // What each touched VM looked like before, to record troubled transitions afterwards.
  std::map<std::string, VmState> before;
  for (const std::string& id : n->vm_ids) before[id] = registry_->VisibleState(registry_->Vm(id)->record());
  for (const VmInstance& vm : hb.vms()) {
    if (VmEntry* e = registry_->Vm(vm.vm_id())) before.emplace(vm.vm_id(), registry_->VisibleState(e->record()));
  }

  ApplyCapacity(*n, hb, now);
  std::map<std::string, Reported> reports;
  for (const VmInstance& vm : hb.vms()) {
    if (!Usable(node_id, vm) || vm.state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
    const VmEntry* e = registry_->Vm(vm.vm_id());
    if (e != nullptr && LeftBehind(e->record(), node_id) && e->record().tenant_id() == vm.tenant_id()) {
      // R0: hidden from every rule below, so it can neither take the record back nor keep
      // the VM from being LOST where it runs now.
      actions.push_back({NodeAction::Kind::kDestroy, node_id, vm.vm_id(),
                         "an old copy left behind when the VM was started on another node with a fresh disk"});
      continue;
    }
    reports[vm.vm_id()] = Summary(vm);
  }
  registry_->SetReports(node_id, reports);

  for (const VmInstance& vm : hb.vms()) {
    auto report = reports.find(vm.vm_id());
    if (report == reports.end()) continue;
    VmEntry* e = registry_->Vm(vm.vm_id());
    if (e == nullptr) {  // R1; a revoked node's word makes no record
      if (!n->revoked) Adopt(node_id, vm, report->second, now);
      continue;
    }
    VmRecord& r = e->record();
    if (r.tenant_id() != vm.tenant_id()) {  // R2
      spdlog::error("vm.owner_mismatch vm={} node={} reported_tenant={}", LogValue(vm.vm_id()), node_id,
                    LogValue(vm.tenant_id()));
      continue;
    }
    if (report->second.vm.state() != ppn::types::v1::VM_STATE_PENDING) registry_->Release(vm.vm_id());
    if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) {  // R3
      actions.push_back({NodeAction::Kind::kDestroy, node_id, vm.vm_id(), "its record is DESTROYED"});
      continue;
    }
    if (e->create_in_flight) continue;  // R4
    if (r.node_id() == node_id) {
      OnOwnNode(*e, node_id, report->second, &actions);  // R5, R8
    } else if (!n->revoked) {
      OnOtherNode(*e, node_id, report->second, &actions);  // R6, R7: nothing moves to a revoked node
    }
  }
  // Copy: moves below change the node's index.
  std::set<std::string> own = n->vm_ids;
  for (const std::string& id : own) {
    if (reports.count(id) == 0) Unreported(*registry_->Vm(id), node_id, now, &actions);  // R9-R11
  }

  for (const auto& [id, was] : before) {
    VmEntry* e = registry_->Vm(id);
    if (e == nullptr) continue;
    VmState is = registry_->VisibleState(e->record());
    if (is != was && is != ppn::types::v1::VM_STATE_DESTROYED && (Troubled(was) || Troubled(is))) {
      log_->StateChanged(e->record(), was, is,
                         e->record().state_message().empty() ? absl::StrCat("reported by node ", node_id)
                                                             : e->record().state_message());
    }
  }
  registry_->Reindex(node_id);
  registry_->Changed();
  return actions;
}

void Reconciler::Adopt(const std::string& node_id, const VmInstance& vm, const Reported& report, absl::Time now) {
  // A VM the store lacks (created while the fleet was down, or the store was lost): adopted
  // with the owner the node echoes, so isolation survives.
  if (vm.tenant_id().empty()) {
    spdlog::error("vm.unowned vm={} node={}: not adopted", LogValue(vm.vm_id()), node_id);
    return;
  }
  StoredVm adopted;
  VmRecord& r = adopted.record;
  r.set_vm_id(vm.vm_id());
  r.set_tenant_id(vm.tenant_id());
  r.set_node_id(node_id);
  *r.mutable_spec() = vm.spec();
  r.mutable_spec()->clear_user_data();
  TakeReport(r, report.vm);
  absl::Time start = now;
  if (IsValidTimestamp(vm.start_time())) {
    start = absl::FromUnixSeconds(vm.start_time().seconds()) + absl::Nanoseconds(vm.start_time().nanos());
  }
  *r.mutable_create_time() = ToProtoTimestamp(start);
  absl::Duration ttl;
  if (vm.spec().has_ttl() && ToAbslDuration(vm.spec().ttl(), "ttl", &ttl).ok() && ttl > absl::ZeroDuration()) {
    *r.mutable_expire_time() = ToProtoTimestamp(start + ttl);
  }
  registry_->Insert(std::move(adopted));
  registry_->Put(vm.vm_id()).IgnoreError();  // logged by Put; the next heartbeat writes it again
  log_->Adopted(registry_->Vm(vm.vm_id())->record(), "", "unknown to the fleet");
  spdlog::info("vm.adopted vm={} tenant={} node={}", LogValue(vm.vm_id()), LogValue(vm.tenant_id()), node_id);
}

void Reconciler::OnOwnNode(VmEntry& e, const std::string& node_id, const Reported& report,
                           std::vector<NodeAction>* actions) {
  VmRecord& r = e.record();
  bool was_pending = r.state() == ppn::types::v1::VM_STATE_PENDING;
  e.settle_after = absl::InfinitePast();  // its node has seen it: later reports are current
  if (report.vm.migrated_out()) {         // R8
    std::string runs = LiveElsewhere(e, node_id);
    if (!runs.empty()) {
      MoveTo(e, runs, registry_->Node(runs)->reported.at(r.vm_id()), actions);
      return;
    }
    bool incoming = false;
    for (const auto& [other, rep] : registry_->ReportsOf(r.vm_id())) incoming |= other != node_id && rep.Incoming();
    e.migrated_out_beats = incoming ? 0 : e.migrated_out_beats + 1;
    if (e.migrated_out_beats >= 2) {
      actions->push_back(
          {NodeAction::Kind::kResume, node_id, r.vm_id(), "paused after migrating out and no node took it over"});
    }
  } else {
    e.migrated_out_beats = 0;
  }
  if (!TakeReport(r, report.vm)) return;
  if (was_pending && r.state() != ppn::types::v1::VM_STATE_PENDING) {
    if (r.state() != ppn::types::v1::VM_STATE_FAILED) log_->Created(r, "heartbeat");
    spdlog::info("vm.settled vm={} node={} state={}", r.vm_id(), node_id, ppn::types::v1::VmState_Name(r.state()));
  }
  registry_->Put(r.vm_id()).IgnoreError();
}

void Reconciler::OnOtherNode(VmEntry& e, const std::string& node_id, const Reported& report,
                             std::vector<NodeAction>* actions) {
  VmRecord& r = e.record();
  NodeEntry* recorded = registry_->Node(r.node_id());
  const Reported* there = nullptr;
  if (recorded != nullptr && recorded->reporting()) {
    auto it = recorded->reported.find(r.vm_id());
    if (it != recorded->reported.end()) there = &it->second;
  }
  if (report.Live()) {  // R6
    if (there != nullptr && there->Live()) {
      spdlog::error("vm.duplicate vm={} nodes={},{}: both run it; an operator must remove one", r.vm_id(), r.node_id(),
                    node_id);
      return;
    }
    // While its recorded node is alive and holds no paused copy, this is a live migration the
    // scheduler records in a moment (vm.migrate): give it two heartbeats before adopting.
    bool recorded_alive = recorded != nullptr && recorded->reporting();
    bool paused_there = there != nullptr && there->vm.migrated_out();
    if (recorded_alive && !paused_there && ++e.elsewhere_beats < 2) return;
    MoveTo(e, node_id, report, actions);
    return;
  }
  if (report.vm.migrated_out() && there != nullptr && there->Live()) {  // R7
    actions->push_back({NodeAction::Kind::kDestroy, node_id, r.vm_id(), "a paused copy of a VM that runs elsewhere"});
  }
}

void Reconciler::MoveTo(VmEntry& e, const std::string& node_id, const Reported& report,
                        std::vector<NodeAction>* actions) {
  VmRecord& r = e.record();
  std::string from = r.node_id();
  bool was_pending = r.state() == ppn::types::v1::VM_STATE_PENDING;
  r.set_node_id(node_id);
  TakeReport(r, report.vm);
  if (!r.pinned_node_id().empty()) r.set_pinned_node_id(node_id);
  e.migrated_out_beats = 0;
  e.elsewhere_beats = 0;
  e.settle_after = absl::InfinitePast();
  registry_->Release(r.vm_id());
  registry_->Put(r.vm_id()).IgnoreError();
  if (was_pending) log_->Created(r, "heartbeat");
  log_->Adopted(r, from, absl::StrCat("runs on node ", node_id));
  spdlog::info("vm.adopted vm={} from={} to={}", r.vm_id(), from, node_id);
  NodeEntry* old = registry_->Node(from);
  if (old != nullptr && old->reporting()) {
    auto it = old->reported.find(r.vm_id());
    if (it != old->reported.end() && it->second.vm.migrated_out()) {
      actions->push_back({NodeAction::Kind::kDestroy, from, r.vm_id(), "a paused copy of a VM that runs elsewhere"});
    }
  }
}

std::string Reconciler::LiveElsewhere(const VmEntry& e, const std::string& except) const {
  for (const auto& [node_id, rep] : registry_->ReportsOf(e.record().vm_id())) {
    if (node_id != except && rep.Live() && rep.vm.tenant_id() == e.record().tenant_id()) return node_id;
  }
  return "";
}

void Reconciler::Unreported(VmEntry& e, const std::string& node_id, absl::Time now, std::vector<NodeAction>* actions) {
  VmRecord& r = e.record();
  VmState s = r.state();
  if (e.create_in_flight || s == ppn::types::v1::VM_STATE_DESTROYED || s == ppn::types::v1::VM_STATE_LOST ||
      s == ppn::types::v1::VM_STATE_FAILED) {
    return;  // R9, R10
  }
  // A heartbeat received before its create ended may predate the spawn.
  if (now < e.settle_after) return;
  std::string runs = LiveElsewhere(e, node_id);
  if (!runs.empty()) {
    // A running VM that left its node for another is a live migration the scheduler records in
    // a moment (R6's grace).
    if (s != ppn::types::v1::VM_STATE_PENDING && ++e.elsewhere_beats < 2) return;
    MoveTo(e, runs, registry_->Node(runs)->reported.at(r.vm_id()), actions);
    return;
  }
  if (s == ppn::types::v1::VM_STATE_PENDING) {  // R9
    r.set_state(ppn::types::v1::VM_STATE_FAILED);
    r.set_state_message("its node never started it");
    e.settle_after = absl::InfinitePast();
    registry_->Release(r.vm_id());
    registry_->Put(r.vm_id()).IgnoreError();
    spdlog::warn("vm.failed vm={} tenant={} node={}: never started", r.vm_id(), LogValue(r.tenant_id()), node_id);
    return;
  }
  // R11
  for (const auto& [other, rep] : registry_->ReportsOf(r.vm_id())) {
    if (other != node_id && rep.vm.tenant_id() == r.tenant_id()) return;
  }
  if (InStartupGrace(now)) return;
  r.set_state(ppn::types::v1::VM_STATE_LOST);
  r.set_state_message(absl::StrCat("node ", node_id, " no longer reports this VM"));
  registry_->Release(r.vm_id());
  registry_->Put(r.vm_id()).IgnoreError();
  spdlog::warn("vm.lost vm={} tenant={} node={}", r.vm_id(), LogValue(r.tenant_id()), node_id);
}

void Reconciler::ActionDone(const NodeAction& a, const absl::StatusOr<VmInstance>& result) {
  VmEntry* e = registry_->Vm(a.vm_id);
  if (!result.ok() &&
      !(a.kind == NodeAction::Kind::kDestroy && result.status().code() == absl::StatusCode::kNotFound)) {
    spdlog::warn("vm.node_action_failed action={} vm={} node={} code={} error={}", a.Key(), a.vm_id, a.node_id,
                 absl::StatusCodeToString(result.status().code()), LogValue(result.status().message()));
    return;
  }
  if (a.kind == NodeAction::Kind::kDestroy) {
    spdlog::info("vm.node_copy_destroyed vm={} node={} reason={}", a.vm_id, a.node_id, LogValue(a.reason));
    if (e != nullptr && LeftBehind(e->record(), a.node_id)) {
      // The old copy is gone: that node may take the VM again one day (a migration).
      auto* left = e->record().mutable_left_behind_node_ids();
      left->erase(std::remove(left->begin(), left->end(), a.node_id), left->end());
      registry_->Put(a.vm_id).IgnoreError();  // logged by Put; the node is told again if it still reports it
      registry_->Changed();
    }
    if (result.ok() && e != nullptr && e->record().state() == ppn::types::v1::VM_STATE_DESTROYED) {
      log_->Destroyed(e->record(), Actor::Fleet(), ppn::types::v1::VM_STATE_DESTROYED, a.node_id);
    }
    return;
  }
  if (e == nullptr || e->record().node_id() != a.node_id || e->record().state() != ppn::types::v1::VM_STATE_MIGRATING) {
    return;  // the record moved on meanwhile
  }
  VmRecord& r = e->record();
  TakeReport(r, *result);
  e->migrated_out_beats = 0;
  registry_->Put(r.vm_id()).IgnoreError();
  log_->StateChanged(r, ppn::types::v1::VM_STATE_MIGRATING, r.state(), a.reason);
  spdlog::info("vm.resumed vm={} node={}", r.vm_id(), a.node_id);
  registry_->Changed();
}

void Reconciler::NodeUnreachable(const std::string& node_id) {
  NodeEntry* n = registry_->Node(node_id);
  if (n == nullptr) return;
  for (const std::string& id : n->vm_ids) {
    const VmRecord& r = registry_->Vm(id)->record();
    if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
    log_->StateChanged(r, r.state(), ppn::types::v1::VM_STATE_UNKNOWN,
                       absl::StrCat("node ", node_id, " is unreachable"));
  }
}

}  // namespace ppn::fleet
