#include "fleet/fleet_core.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {
namespace {

using google::protobuf::util::TimeUtil;
using ppn::fleet::v1::VmRecord;
using ppn::types::v1::VmState;

bool Ended(VmState s) { return s == ppn::types::v1::VM_STATE_STOPPED; }

google::protobuf::Timestamp Stamp(absl::Time t) { return ToProtoTimestamp(t); }

}  // namespace

absl::Status FleetCore::Load() {
  PPN_ASSIGN_OR_RETURN(std::vector<StoredVm> stored, deps_.store->LoadAll());
  absl::MutexLock l(&mu_);
  for (StoredVm& vm : stored) {
    std::string id = vm.record.vm_id();
    std::string node = vm.record.node_id();
    vms_[id] = std::move(vm);
    if (!node.empty()) {
      indexed_node_[id] = node;
      nodes_[node].vm_ids.insert(id);
    }
  }
  ChangedLocked();
  return absl::OkStatus();
}

void FleetCore::AddNode(const std::string& node_id, const std::string& agent_address) {
  absl::MutexLock l(&mu_);
  NodeEntry& n = nodes_[node_id];
  if (n.node.node_id().empty()) {
    n.node.set_node_id(node_id);
    n.node.set_state(ppn::fleet::v1::NODE_STATE_JOINING);
    n.interval = options_.heartbeat_interval;
    spdlog::info("node.added node={} agent={}", node_id, agent_address);
  }
  n.node.set_agent_address(agent_address);
  ReindexLocked(node_id);
  ChangedLocked();
}

void FleetCore::RevokeNode(const std::string& node_id) {
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  it->second.revoked = true;
  it->second.node.set_state(ppn::fleet::v1::NODE_STATE_REVOKED);
  spdlog::warn("node.revoked node={}", node_id);
  ReindexLocked(node_id);
  ChangedLocked();
}

std::vector<std::pair<std::string, std::string>> FleetCore::NodeAddresses() {
  absl::MutexLock l(&mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [id, n] : nodes_) {
    if (!n.node.node_id().empty()) out.emplace_back(id, n.node.agent_address());
  }
  return out;
}

void FleetCore::OnHeartbeat(const ppn::host::v1::Heartbeat& hb) {
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(hb.node_id());
  if (it == nodes_.end() || it->second.node.node_id().empty()) return;  // only registered nodes report
  NodeEntry& n = it->second;
  absl::Time now = deps_.clock->Now();
  if (!n.revoked) {
    if (n.node.state() != ppn::fleet::v1::NODE_STATE_ALIVE) spdlog::info("node.alive node={}", hb.node_id());
    n.node.set_state(ppn::fleet::v1::NODE_STATE_ALIVE);
  }
  n.last_heartbeat = now;
  if (hb.has_interval()) n.interval = absl::Milliseconds(TimeUtil::DurationToMilliseconds(hb.interval()));
  n.node.set_total_memory_mib(hb.total_memory_mib());
  n.node.set_available_memory_mib(hb.available_memory_mib());
  n.node.set_cpus(hb.cpus());
  n.node.set_load_average(hb.load_average());
  n.node.set_kvm(hb.kvm());
  *n.node.mutable_capabilities() = hb.capabilities();
  n.node.set_vm_count(hb.vms_size());
  *n.node.mutable_last_heartbeat_time() = Stamp(now);

  std::set<std::string> reported;
  for (const auto& vm : hb.vms()) {
    reported.insert(vm.vm_id());
    reservations_.erase(vm.vm_id());  // now counted in the node's own available memory
    auto rec = vms_.find(vm.vm_id());
    if (rec == vms_.end()) {
      // A VM the store lacks (created while the fleet was down, or the store was lost):
      // adopt it with the owner the node echoes, so isolation survives.
      StoredVm adopted;
      VmRecord& r = adopted.record;
      r.set_vm_id(vm.vm_id());
      r.set_tenant_id(vm.tenant_id());
      r.set_node_id(hb.node_id());
      *r.mutable_spec() = vm.spec();
      r.set_state(vm.state());
      *r.mutable_forwarded_ports() = vm.forwarded_ports();
      r.set_accelerator(vm.accelerator());
      *r.mutable_create_time() = vm.start_time();
      vms_[vm.vm_id()] = adopted;
      PutLocked(vm.vm_id()).IgnoreError();
      spdlog::info("vm.adopted vm={} tenant={} node={}", vm.vm_id(), vm.tenant_id(), hb.node_id());
      continue;
    }
    VmRecord& r = rec->second.record;
    if (r.node_id() != hb.node_id() || Ended(r.state())) continue;  // e.g. a migration target
    if (r.state() != vm.state() || r.forwarded_ports_size() != vm.forwarded_ports_size()) {
      r.set_state(vm.state());
      r.set_state_message(vm.state_message());
      *r.mutable_forwarded_ports() = vm.forwarded_ports();
      PutLocked(r.vm_id()).IgnoreError();
    }
  }
  for (const std::string& id : n.vm_ids) {
    VmRecord& r = vms_[id].record;
    if (reported.count(id) != 0 || reservations_.count(id) != 0) continue;
    if (Ended(r.state()) || r.state() == ppn::types::v1::VM_STATE_LOST ||
        r.state() == ppn::types::v1::VM_STATE_PENDING) {
      continue;
    }
    r.set_state(ppn::types::v1::VM_STATE_LOST);
    r.set_state_message(absl::StrCat("node ", hb.node_id(), " no longer reports this VM"));
    PutLocked(id).IgnoreError();
    spdlog::warn("vm.lost vm={} tenant={} node={}", id, r.tenant_id(), hb.node_id());
  }
  ReindexLocked(hb.node_id());
  ChangedLocked();
}

void FleetCore::RunOnce() {
  std::vector<std::pair<std::string, std::string>> expired;  // vm, tenant
  {
    absl::MutexLock l(&mu_);
    absl::Time now = deps_.clock->Now();
    for (auto& [id, n] : nodes_) {
      if (n.node.state() == ppn::fleet::v1::NODE_STATE_ALIVE && now - n.last_heartbeat > 3 * n.interval) {
        n.node.set_state(ppn::fleet::v1::NODE_STATE_UNREACHABLE);
        spdlog::warn("node.unreachable node={} silent_ms={}", id, absl::ToInt64Milliseconds(now - n.last_heartbeat));
        ReindexLocked(id);
        ChangedLocked();
      }
    }
    for (const auto& [id, stored] : vms_) {
      const VmRecord& r = stored.record;
      if (!Ended(r.state()) && r.state() != ppn::types::v1::VM_STATE_PENDING && r.has_expire_time() &&
          TimeUtil::TimestampToMicroseconds(r.expire_time()) <= absl::ToUnixMicros(now)) {
        expired.emplace_back(id, r.tenant_id());
      }
    }
  }
  for (const auto& [vm, tenant] : expired) {
    absl::StatusOr<VmRecord> r = DestroyVm(Scope{tenant}, vm);
    if (r.ok()) {
      spdlog::info("vm.expired vm={} tenant={}", vm, tenant);
    } else {
      spdlog::warn("vm.expire_failed vm={} code={}", vm, absl::StatusCodeToString(r.status().code()));
    }
  }
}

// A node's placement view; `reserved_mib` is what creates in flight hold on it.
static NodeView ViewOf(const std::string& node_id, const ppn::fleet::v1::Node& node, bool revoked,
                       uint64_t reserved_mib) {
  NodeView v;
  v.node_id = node_id;
  v.alive = node.state() == ppn::fleet::v1::NODE_STATE_ALIVE;
  v.revoked = revoked;
  v.available_mib = node.available_memory_mib();
  v.reserved_mib = reserved_mib;
  v.kvm = node.kvm();
  return v;
}

NodeView FleetCore::ViewOfLocked(const std::string& node_id) const {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return ViewOf(node_id, {}, false, 0);
  uint64_t reserved = 0;
  for (const auto& [_, r] : reservations_) {
    if (r.node_id == node_id) reserved += r.memory_mib;
  }
  return ViewOf(node_id, it->second.node, it->second.revoked, reserved);
}

std::vector<NodeView> FleetCore::NodeViewsLocked() const {
  // One pass over the reservations for all nodes, not one per node.
  std::map<std::string, uint64_t> reserved;
  for (const auto& [_, r] : reservations_) reserved[r.node_id] += r.memory_mib;
  std::vector<NodeView> views;
  for (const auto& [id, n] : nodes_) {
    if (n.node.node_id().empty()) continue;  // known only from a VM record, never registered
    auto r = reserved.find(id);
    views.push_back(ViewOf(id, n.node, n.revoked, r == reserved.end() ? 0 : r->second));
  }
  return views;
}

void FleetCore::ReindexLocked(const std::string& node_id) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end() || it->second.node.node_id().empty()) {
    placement_.Remove(node_id);
    return;
  }
  placement_.Upsert(ViewOfLocked(node_id));
}

Decision FleetCore::PlaceLocked(const ppn::types::v1::VmSpec& spec, const std::set<std::string>& excluded,
                                bool explain) const {
  PlacementRequest req;
  req.memory_mib = spec.memory_mib();
  req.excluded_node_ids = excluded;
  if (!explain) {
    // The hot path: the index walks from the best node instead of scanning the fleet.
    std::string best = placement_.Best(req);
    if (!best.empty()) return Place({ViewOfLocked(best)}, req, /*explain=*/false);
  }
  return Place(NodeViewsLocked(), req, /*explain=*/true);
}

Decision FleetCore::Explain(const ppn::types::v1::VmSpec& spec, const std::set<std::string>& excluded) {
  absl::MutexLock l(&mu_);
  return PlaceLocked(spec, excluded, /*explain=*/true);
}

std::string FleetCore::NewVmId() {
  // Time-ordered, so listing by id lists oldest first.
  uint8_t rnd[4];
  deps_.random->Fill(rnd, sizeof rnd).IgnoreError();
  uint32_t r = (uint32_t{rnd[0]} << 24) | (uint32_t{rnd[1]} << 16) | (uint32_t{rnd[2]} << 8) | rnd[3];
  return absl::StrFormat("vm-%011x%08x", absl::ToUnixMillis(deps_.clock->Now()), r);
}

absl::Status FleetCore::PutLocked(const std::string& vm_id) {
  auto it = vms_.find(vm_id);
  std::string node = it == vms_.end() ? "" : it->second.record.node_id();
  auto indexed = indexed_node_.find(vm_id);
  if (indexed != indexed_node_.end() && indexed->second != node) {
    nodes_[indexed->second].vm_ids.erase(vm_id);
    indexed_node_.erase(indexed);
  }
  if (!node.empty() && indexed_node_.emplace(vm_id, node).second) nodes_[node].vm_ids.insert(vm_id);
  if (it == vms_.end()) return deps_.store->Delete(vm_id);
  absl::Status s = deps_.store->Put(it->second);
  if (!s.ok()) spdlog::error("vm.store_failed vm={} error=\"{}\"", vm_id, std::string(s.message()));
  return s;
}

void FleetCore::ChangedLocked() {
  ++version_;
  changed_cv_.SignalAll();
}

absl::StatusOr<CreateResult> FleetCore::CreateVm(const std::string& tenant_id, const ppn::types::v1::VmSpec& spec,
                                                 const std::string& request_id) {
  PPN_RETURN_IF_ERROR(ValidateVmSpec(spec));
  if (tenant_id.empty()) return absl::UnauthenticatedError("no tenant");
  if (request_id.size() > 64) return absl::InvalidArgumentError("request_id longer than 64");
  std::string vm_id;
  Decision decision;
  std::set<std::string> tried;
  std::string errors;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string node_id, address;
    {
      absl::MutexLock l(&mu_);
      if (attempt == 0) {
        for (const auto& [id, vm] : vms_) {
          const VmRecord& r = vm.record;
          if (r.tenant_id() != tenant_id) continue;
          if (!request_id.empty() && vm.request_id == request_id) {
            return CreateResult{ViewLocked(r), {}};  // a retry of a call that already created it
          }
          if (!Ended(r.state()) && r.spec().display_name() == spec.display_name()) {
            return absl::AlreadyExistsError(absl::StrCat("a VM named ", spec.display_name(), " already exists"));
          }
        }
        vm_id = NewVmId();
      }
      decision = PlaceLocked(spec, tried, /*explain=*/false);
      if (decision.chosen_node_id.empty()) {
        vms_.erase(vm_id);
        PutLocked(vm_id).IgnoreError();
        ChangedLocked();
        return absl::ResourceExhaustedError(absl::StrCat(errors, errors.empty() ? "" : "; ", decision.Explain()));
      }
      node_id = decision.chosen_node_id;
      address = nodes_[node_id].node.agent_address();
      reservations_[vm_id] = {node_id, spec.memory_mib()};
      ReindexLocked(node_id);
      StoredVm& stored = vms_[vm_id];
      stored.request_id = request_id;
      VmRecord& r = stored.record;
      r.set_vm_id(vm_id);
      r.set_tenant_id(tenant_id);
      r.set_node_id(node_id);
      *r.mutable_spec() = spec;
      r.mutable_spec()->clear_user_data();
      r.set_state(ppn::types::v1::VM_STATE_PENDING);
      absl::Time now = deps_.clock->Now();
      *r.mutable_create_time() = Stamp(now);
      if (spec.has_ttl()) {
        *r.mutable_expire_time() =
            Stamp(now + absl::Seconds(spec.ttl().seconds()) + absl::Nanoseconds(spec.ttl().nanos()));
      }
      // Durable before the node is asked, so a crash mid-spawn leaves a record that the
      // node's next heartbeat settles (RUNNING or LOST), never an orphan.
      PPN_RETURN_IF_ERROR(PutLocked(vm_id));
      ChangedLocked();
    }
    absl::StatusOr<ppn::host::v1::VmInstance> spawned =
        deps_.agents->ForNode(node_id, address)->SpawnVm(vm_id, tenant_id, spec);
    absl::MutexLock l(&mu_);
    if (spawned.ok()) {
      VmRecord& r = vms_[vm_id].record;
      r.set_state(spawned->state());
      r.set_accelerator(spawned->accelerator());
      *r.mutable_forwarded_ports() = spawned->forwarded_ports();
      PPN_RETURN_IF_ERROR(PutLocked(vm_id));
      ChangedLocked();
      spdlog::info("vm.created vm={} tenant={} node={} attempt={}", vm_id, tenant_id, node_id, attempt + 1);
      return CreateResult{ViewLocked(r), decision};
    }
    reservations_.erase(vm_id);
    ReindexLocked(node_id);
    tried.insert(node_id);
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", "spawn on ", node_id, " failed: ", spawned.status().message());
    spdlog::warn("vm.spawn_failed vm={} node={} code={}", vm_id, node_id,
                 absl::StatusCodeToString(spawned.status().code()));
    if (attempt == 1 || spawned.status().code() == absl::StatusCode::kInvalidArgument ||
        spawned.status().code() == absl::StatusCode::kNotFound) {
      vms_.erase(vm_id);
      PutLocked(vm_id).IgnoreError();
      ChangedLocked();
      return absl::Status(spawned.status().code(), errors);
    }
  }
  return absl::InternalError("unreachable");
}

VmRecord FleetCore::ViewLocked(const VmRecord& record) const {
  VmRecord view = record;
  auto n = nodes_.find(record.node_id());
  if (n != nodes_.end() && n->second.node.state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE && !Ended(record.state())) {
    view.set_state(ppn::types::v1::VM_STATE_UNKNOWN);
    view.set_state_message(absl::StrCat("node ", record.node_id(), " is unreachable"));
  }
  return view;
}

absl::StatusOr<VmRecord> FleetCore::GetVm(const Scope& scope, const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end() || !scope.Sees(it->second.record.tenant_id())) {
    return absl::NotFoundError(absl::StrCat("vm ", vm_id.substr(0, 64), " not found"));
  }
  return ViewLocked(it->second.record);
}

absl::StatusOr<ppn::fleet::v1::ListVmsResponse> FleetCore::ListVms(const Scope& scope,
                                                                   const ppn::fleet::v1::ListVmsRequest& r) {
  if (r.page_size() < 0 || r.page_size() > 1000) return absl::InvalidArgumentError("page_size must be 0-1000");
  int limit = r.page_size() == 0 ? 100 : r.page_size();
  absl::MutexLock l(&mu_);
  ppn::fleet::v1::ListVmsResponse out;
  auto it = r.page_token().empty() ? vms_.begin() : vms_.upper_bound(r.page_token());
  for (; it != vms_.end(); ++it) {
    const VmRecord& rec = it->second.record;
    if (!scope.Sees(rec.tenant_id())) continue;
    if (Ended(rec.state()) && !r.include_stopped()) continue;
    if (!r.node_id().empty() && rec.node_id() != r.node_id()) continue;
    bool labels_match = true;
    for (const auto& [k, v] : r.label_selector()) {
      auto found = rec.spec().labels().find(k);
      if (found == rec.spec().labels().end() || found->second != v) labels_match = false;
    }
    if (!labels_match) continue;
    if (out.vms_size() == limit) {
      out.set_next_page_token(out.vms(out.vms_size() - 1).vm_id());
      break;
    }
    *out.add_vms() = ViewLocked(rec);
  }
  return out;
}

absl::StatusOr<VmRecord> FleetCore::DestroyVm(const Scope& scope, const std::string& vm_id) {
  std::string node_id, address;
  {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end() || !scope.Sees(it->second.record.tenant_id())) {
      return absl::NotFoundError(absl::StrCat("vm ", vm_id.substr(0, 64), " not found"));
    }
    const VmRecord& r = it->second.record;
    if (Ended(r.state())) return r;
    if (r.state() == ppn::types::v1::VM_STATE_PENDING) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is still being created; retry"));
    }
    node_id = r.node_id();
    auto n = nodes_.find(node_id);
    if (n == nodes_.end()) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is on unknown node ", node_id));
    }
    if (n->second.node.state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE) {
      return absl::UnavailableError(absl::StrCat("node ", node_id, " is unreachable; retry once it is back"));
    }
    address = n->second.node.agent_address();
  }
  absl::Status s = deps_.agents->ForNode(node_id, address)->DestroyVm(vm_id);
  if (!s.ok() && s.code() != absl::StatusCode::kNotFound) return s;
  absl::MutexLock l(&mu_);
  VmRecord& r = vms_[vm_id].record;
  r.set_state(ppn::types::v1::VM_STATE_STOPPED);
  r.clear_state_message();
  r.clear_forwarded_ports();
  PPN_RETURN_IF_ERROR(PutLocked(vm_id));
  ChangedLocked();
  spdlog::info("vm.destroyed vm={} tenant={} node={}", vm_id, r.tenant_id(), node_id);
  return r;
}

std::vector<ppn::fleet::v1::Node> FleetCore::ListNodes() {
  absl::MutexLock l(&mu_);
  std::map<std::string, uint64_t> reserved;
  for (const auto& [_, r] : reservations_) reserved[r.node_id] += r.memory_mib;
  std::vector<ppn::fleet::v1::Node> out;
  for (const auto& [id, n] : nodes_) {
    if (n.node.node_id().empty()) continue;
    out.push_back(n.node);
    out.back().set_reserved_memory_mib(reserved[id]);
  }
  return out;
}

absl::StatusOr<VmRecord> FleetCore::RecordMigration(const ppn::fleet::v1::RecordMigrationRequest& req) {
  absl::MutexLock l(&mu_);
  auto it = vms_.find(req.vm_id());
  if (it == vms_.end()) return absl::NotFoundError(absl::StrCat("vm ", req.vm_id(), " not found"));
  VmRecord& r = it->second.record;
  if (r.node_id() != req.source_node_id()) {
    return absl::AbortedError(absl::StrCat("vm ", req.vm_id(), " is on ", r.node_id(), ", not ", req.source_node_id()));
  }
  if (nodes_.count(req.target_node_id()) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("unknown node ", req.target_node_id()));
  }
  r.set_node_id(req.target_node_id());
  *r.mutable_forwarded_ports() = req.forwarded_ports();
  r.set_state(ppn::types::v1::VM_STATE_RUNNING);
  r.clear_state_message();
  PPN_RETURN_IF_ERROR(PutLocked(req.vm_id()));
  ChangedLocked();
  spdlog::info("vm.moved vm={} from={} to={}", req.vm_id(), req.source_node_id(), req.target_node_id());
  return ViewLocked(r);
}

absl::StatusOr<VmRecord> FleetCore::SetPin(const std::string& vm_id, const std::string& node_id) {
  absl::MutexLock l(&mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " not found"));
  VmRecord& r = it->second.record;
  if (!node_id.empty() && node_id != r.node_id()) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " runs on ", r.node_id(), ", not ", node_id,
                                                      "; a VM is pinned to the node it runs on"));
  }
  r.set_pinned_node_id(node_id);
  PPN_RETURN_IF_ERROR(PutLocked(vm_id));
  ChangedLocked();
  return ViewLocked(r);
}

uint64_t FleetCore::WaitForChange(uint64_t version, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  absl::Time deadline = absl::Now() + timeout;
  while (version_ == version) {
    if (changed_cv_.WaitWithDeadline(&mu_, deadline)) break;
  }
  return version_;
}

uint64_t FleetCore::version() {
  absl::MutexLock l(&mu_);
  return version_;
}

}  // namespace ppn::fleet
