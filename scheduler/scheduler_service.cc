#include "scheduler/scheduler_service.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/rpc_log.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/create_channel.h"
#include "spdlog/spdlog.h"

namespace ppn::scheduler {
namespace {

using google::protobuf::util::TimeUtil;
using ppn::types::v1::MigrationProgress;

template <typename Fn>
absl::Status Call(Fn fn, int seconds = 30) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return FromGrpcStatus(fn(&ctx));
}

}  // namespace

SchedulerServiceImpl::SchedulerServiceImpl(const std::string& fleet_address, const std::string& ledger_address,
                                           TlsFiles tls)
    : tls_(std::move(tls)),
      fleet_(ppn::fleet::v1::FleetService::NewStub(grpc::CreateChannel(fleet_address, MtlsChannelCredentials(tls_)))),
      ledger_(ppn::ledger::v1::Ledger::NewStub(grpc::CreateChannel(ledger_address, MtlsChannelCredentials(tls_)))) {}

std::unique_ptr<ppn::host::v1::HostAgent::Stub> SchedulerServiceImpl::Agent(const std::string& address) {
  return ppn::host::v1::HostAgent::NewStub(grpc::CreateChannel(address, MtlsChannelCredentials(tls_)));
}

absl::StatusOr<std::vector<ppn::fleet::v1::Node>> SchedulerServiceImpl::Nodes() {
  ppn::fleet::v1::ListNodesResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return fleet_->ListNodes(c, {}, &resp); });
  if (!s.ok()) return s;
  return std::vector<ppn::fleet::v1::Node>(resp.nodes().begin(), resp.nodes().end());
}

void SchedulerServiceImpl::RecordMigrationAttempt(const ppn::fleet::v1::VmRecord& vm, const MigrationProgress& report,
                                                  bool succeeded) {
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind("vm.migrate");
  entry.set_tenant_id(vm.tenant_id());
  entry.set_subject(vm.vm_id());
  entry.set_outcome(succeeded ? ppn::ledger::v1::OUTCOME_SUCCESS : ppn::ledger::v1::OUTCOME_FAILURE);
  auto& attributes = *entry.mutable_attributes();
  attributes["source"] = report.source_node_id();
  attributes["target"] = report.target_node_id();
  if (succeeded) {
    attributes["total_ms"] = absl::StrCat(TimeUtil::DurationToMilliseconds(report.total_time()));
    attributes["downtime_ms"] = absl::StrCat(TimeUtil::DurationToMilliseconds(report.downtime()));
    attributes["bytes"] = absl::StrCat(report.transferred_bytes());
  } else {
    attributes["reason"] = report.message();
  }
  ppn::ledger::v1::AppendResponse appended;
  absl::Status s = Call([&](grpc::ClientContext* c) { return ledger_->Append(c, entry, &appended); });
  if (!s.ok()) spdlog::error("migration.not_in_ledger vm={} error=\"{}\"", vm.vm_id(), std::string(s.message()));
}

absl::StatusOr<MigrationProgress> SchedulerServiceImpl::MigrateVm(const v1::MigrateRequest& request,
                                                                  const ProgressFn& progress) {
  ppn::fleet::v1::GetVmRequest get;
  get.set_vm_id(request.vm_id());
  ppn::fleet::v1::GetVmResponse got;
  absl::Status s = Call([&](grpc::ClientContext* c) { return fleet_->GetVm(c, get, &got); });
  if (!s.ok()) return s;
  const ppn::fleet::v1::VmRecord vm = got.vm();
  if (!vm.pinned_node_id().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", vm.vm_id(), " is pinned to node ", vm.pinned_node_id(), "; unpin it to move it"));
  }
  if (vm.state() != ppn::types::v1::VM_STATE_RUNNING) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", vm.vm_id(), " is ", ppn::types::v1::VmState_Name(vm.state()), ", not running"));
  }
  absl::StatusOr<std::vector<ppn::fleet::v1::Node>> nodes = Nodes();
  if (!nodes.ok()) return nodes.status();
  std::map<std::string, ppn::fleet::v1::Node> by_id;
  for (const auto& n : *nodes) by_id[n.node_id()] = n;
  std::string target = request.target_node_id();
  if (target.empty()) {
    ppn::fleet::v1::ExplainPlacementRequest ex;
    *ex.mutable_spec() = vm.spec();
    ex.add_excluded_node_ids(vm.node_id());
    ppn::fleet::v1::ExplainPlacementResponse decision;
    s = Call([&](grpc::ClientContext* c) { return fleet_->ExplainPlacement(c, ex, &decision); });
    if (!s.ok()) return s;
    target = decision.decision().chosen_node_id();
    if (target.empty()) {
      std::string why;
      for (const auto& v : decision.decision().verdicts())
        absl::StrAppend(&why, why.empty() ? "" : "; ", v.node_id(), ": ", v.reason());
      return absl::ResourceExhaustedError(absl::StrCat("no node can take vm ", vm.vm_id(), ": ", why));
    }
  } else {
    auto it = by_id.find(target);
    if (it == by_id.end()) return absl::InvalidArgumentError(absl::StrCat("unknown node ", target));
    if (target == vm.node_id())
      return absl::InvalidArgumentError(absl::StrCat("vm ", vm.vm_id(), " is already on ", target));
    if (it->second.state() == ppn::fleet::v1::NODE_STATE_REVOKED) {
      return absl::FailedPreconditionError(absl::StrCat("node ", target, " is revoked"));
    }
    if (it->second.state() != ppn::fleet::v1::NODE_STATE_ALIVE) {
      return absl::UnavailableError(absl::StrCat("node ", target, " is not alive"));
    }
  }
  if (by_id.count(vm.node_id()) == 0) return absl::FailedPreconditionError("the VM's node is unknown");
  const std::string source = vm.node_id();
  const std::string source_addr = by_id[source].agent_address();
  const std::string target_addr = by_id[target].agent_address();

  MigrationProgress report;
  report.set_vm_id(vm.vm_id());
  report.set_source_node_id(source);
  report.set_target_node_id(target);
  report.set_phase(ppn::types::v1::MIGRATION_PHASE_PREPARING);
  report.set_message(absl::StrCat("preparing ", target));
  *report.mutable_report_time() = TimeUtil::GetCurrentTime();
  progress(report);
  spdlog::info("migration.started vm={} from={} to={}", vm.vm_id(), source, target);

  auto target_agent = Agent(target_addr);
  ppn::host::v1::PrepareIncomingRequest prep;
  prep.set_vm_id(vm.vm_id());
  prep.set_tenant_id(vm.tenant_id());
  *prep.mutable_spec() = vm.spec();
  prep.set_accelerator(vm.accelerator());
  ppn::host::v1::PrepareIncomingResponse prepared;
  s = Call([&](grpc::ClientContext* c) { return target_agent->PrepareIncoming(c, prep, &prepared); }, 90);
  auto failed = [&](const std::string& why) {
    // Leave nothing on the target unless the guest really runs there now.
    ppn::host::v1::ListVmsResponse there;
    bool running_there = Call([&](grpc::ClientContext* c) { return target_agent->ListVms(c, {}, &there); }, 10).ok() &&
                         std::any_of(there.vms().begin(), there.vms().end(), [&](const auto& v) {
                           return v.vm_id() == vm.vm_id() && v.state() == ppn::types::v1::VM_STATE_RUNNING;
                         });
    if (!running_there) {
      ppn::host::v1::DestroyVmRequest d;
      d.set_vm_id(vm.vm_id());
      ppn::host::v1::DestroyVmResponse dr;
      Call([&](grpc::ClientContext* c) { return target_agent->DestroyVm(c, d, &dr); }, 30).IgnoreError();
    }
    report.set_phase(ppn::types::v1::MIGRATION_PHASE_FAILED);
    report.set_message(why);
    *report.mutable_report_time() = TimeUtil::GetCurrentTime();
    spdlog::warn("migration.failed vm={} from={} to={} reason=\"{}\"", vm.vm_id(), source, target, why);
    RecordMigrationAttempt(vm, report, /*succeeded=*/false);
    return report;
  };
  if (!s.ok()) return failed(absl::StrCat("target ", target, " could not prepare: ", s.message()));

  auto source_agent = Agent(source_addr);
  ppn::host::v1::MigrateOutRequest out;
  out.set_vm_id(vm.vm_id());
  out.set_migration_uri(prepared.migration_uri());
  out.set_disk_nbd_uri(prepared.disk_nbd_uri());
  out.set_max_bandwidth_mib_per_second(request.max_bandwidth_mib_per_second());
  out.set_target_node_id(target);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(15));
  auto reader = source_agent->MigrateOut(&ctx, out);
  ppn::host::v1::MigrateOutResponse msg;
  MigrationProgress last;
  while (reader->Read(&msg)) {
    last = msg.progress();
    if (last.phase() != ppn::types::v1::MIGRATION_PHASE_COMPLETED &&
        last.phase() != ppn::types::v1::MIGRATION_PHASE_FAILED) {
      if (!progress(last)) ctx.TryCancel();
    }
  }
  s = FromGrpcStatus(reader->Finish());
  if (!s.ok()) return failed(absl::StrCat("source ", source, ": ", s.message()));
  if (last.phase() != ppn::types::v1::MIGRATION_PHASE_COMPLETED) return failed(last.message());

  // The target resumes the guest on its own; wait until it says so before recording the move.
  absl::Time settle_deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < settle_deadline) {
    ppn::host::v1::ListVmsResponse there;
    bool running = Call([&](grpc::ClientContext* c) { return target_agent->ListVms(c, {}, &there); }, 5).ok() &&
                   std::any_of(there.vms().begin(), there.vms().end(), [&](const auto& v) {
                     return v.vm_id() == vm.vm_id() && v.state() == ppn::types::v1::VM_STATE_RUNNING;
                   });
    if (running) break;
    absl::SleepFor(absl::Milliseconds(50));
  }

  ppn::fleet::v1::RecordMigrationRequest rec;
  rec.set_vm_id(vm.vm_id());
  rec.set_source_node_id(source);
  rec.set_target_node_id(target);
  *rec.mutable_forwarded_ports() = prepared.forwarded_ports();
  ppn::fleet::v1::RecordMigrationResponse recorded;
  s = Call([&](grpc::ClientContext* c) { return fleet_->RecordMigration(c, rec, &recorded); });
  if (!s.ok())
    spdlog::error("migration.unrecorded vm={} to={} error=\"{}\"", vm.vm_id(), target, std::string(s.message()));

  last.set_source_node_id(source);
  last.set_target_node_id(target);
  *last.mutable_forwarded_ports() = prepared.forwarded_ports();
  RecordMigrationAttempt(vm, last, /*succeeded=*/true);
  last.set_message(absl::StrCat("running on ", target, s.ok() ? "" : " (fleet not updated: retry RecordMigration)"));
  spdlog::info("migration.completed vm={} from={} to={} total_ms={} downtime_ms={}", vm.vm_id(), source, target,
               TimeUtil::DurationToMilliseconds(last.total_time()), TimeUtil::DurationToMilliseconds(last.downtime()));
  return last;
}

grpc::Status SchedulerServiceImpl::Migrate(grpc::ServerContext* context, const v1::MigrateRequest* request,
                                           grpc::ServerWriter<v1::MigrateResponse>* writer) {
  auto send = [&](const MigrationProgress& p) {
    v1::MigrateResponse msg;
    *msg.mutable_progress() = p;
    return !context->IsCancelled() && writer->Write(msg);
  };
  absl::StatusOr<MigrationProgress> final_report = MigrateVm(*request, send);
  if (!final_report.ok()) return RpcFailed("Migrate", final_report.status());
  send(*final_report);
  return grpc::Status::OK;
}

grpc::Status SchedulerServiceImpl::Drain(grpc::ServerContext* context, const v1::DrainRequest* request,
                                         grpc::ServerWriter<v1::DrainResponse>* writer) {
  ppn::fleet::v1::ListVmsRequest list;
  list.set_node_id(request->node_id());
  list.set_page_size(1000);
  ppn::fleet::v1::ListVmsResponse vms;
  absl::Status s = Call([&](grpc::ClientContext* c) { return fleet_->ListVms(c, list, &vms); });
  if (!s.ok()) return RpcFailed("Drain", s);
  v1::DrainResponse plan;
  std::vector<std::string> movable;
  for (const auto& vm : vms.vms()) {
    if (!vm.pinned_node_id().empty()) {
      plan.add_pinned_vm_ids(vm.vm_id());
      continue;
    }
    ppn::fleet::v1::ExplainPlacementRequest ex;
    *ex.mutable_spec() = vm.spec();
    ex.add_excluded_node_ids(request->node_id());
    ppn::fleet::v1::ExplainPlacementResponse d;
    Call([&](grpc::ClientContext* c) { return fleet_->ExplainPlacement(c, ex, &d); }).IgnoreError();
    auto* move = plan.add_plan();
    move->set_vm_id(vm.vm_id());
    move->set_source_node_id(request->node_id());
    move->set_target_node_id(d.decision().chosen_node_id());
    move->set_reason(d.decision().chosen_node_id().empty() ? "no node has room" : "drain");
    movable.push_back(vm.vm_id());
  }
  writer->Write(plan);
  if (request->dry_run()) return grpc::Status::OK;
  for (const std::string& id : movable) {
    v1::MigrateRequest m;
    m.set_vm_id(id);
    auto send = [&](const MigrationProgress& p) {
      v1::DrainResponse msg;
      *msg.mutable_progress() = p;
      return !context->IsCancelled() && writer->Write(msg);
    };
    absl::StatusOr<MigrationProgress> r = MigrateVm(m, send);
    MigrationProgress report;
    if (r.ok()) {
      report = *r;
    } else {
      report.set_vm_id(id);
      report.set_phase(ppn::types::v1::MIGRATION_PHASE_FAILED);
      report.set_message(std::string(r.status().message()));
    }
    if (!send(report)) break;
  }
  return grpc::Status::OK;
}

absl::StatusOr<std::vector<v1::PlannedMove>> SchedulerServiceImpl::RebalancePlan() {
  absl::StatusOr<std::vector<ppn::fleet::v1::Node>> nodes = Nodes();
  if (!nodes.ok()) return nodes.status();
  std::map<std::string, int64_t> free;
  for (const auto& n : *nodes) {
    if (n.state() == ppn::fleet::v1::NODE_STATE_ALIVE) free[n.node_id()] = n.available_memory_mib();
  }
  ppn::fleet::v1::ListVmsRequest list;
  list.set_page_size(1000);
  ppn::fleet::v1::ListVmsResponse vms;
  absl::Status s = Call([&](grpc::ClientContext* c) { return fleet_->ListVms(c, list, &vms); });
  if (!s.ok()) return s;
  std::vector<v1::PlannedMove> plan;
  std::set<std::string> moved;
  // Greedy: move the smallest unpinned running VM from the fullest node to the emptiest while
  // that narrows the gap; at most one move per VM and ten in all.
  for (int round = 0; round < 10 && free.size() >= 2; ++round) {
    auto [low, high] =
        std::minmax_element(free.begin(), free.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    const ppn::fleet::v1::VmRecord* pick = nullptr;
    for (const auto& vm : vms.vms()) {
      if (vm.node_id() != low->first || !vm.pinned_node_id().empty() || moved.count(vm.vm_id()) ||
          vm.state() != ppn::types::v1::VM_STATE_RUNNING) {
        continue;
      }
      if (pick == nullptr || vm.spec().memory_mib() < pick->spec().memory_mib()) pick = &vm;
    }
    if (pick == nullptr) break;
    int64_t mem = pick->spec().memory_mib();
    if (high->second - low->second <= 2 * mem) break;  // moving it would not even things out
    v1::PlannedMove move;
    move.set_vm_id(pick->vm_id());
    move.set_source_node_id(low->first);
    move.set_target_node_id(high->first);
    move.set_reason(absl::StrCat(low->first, " has ", low->second, " MiB free, ", high->first, " has ", high->second));
    plan.push_back(move);
    moved.insert(pick->vm_id());
    low->second += mem;
    high->second -= mem;
  }
  return plan;
}

grpc::Status SchedulerServiceImpl::Rebalance(grpc::ServerContext* context, const v1::RebalanceRequest* request,
                                             grpc::ServerWriter<v1::RebalanceResponse>* writer) {
  absl::StatusOr<std::vector<v1::PlannedMove>> plan = RebalancePlan();
  if (!plan.ok()) return RpcFailed("Rebalance", plan.status());
  v1::RebalanceResponse first;
  for (const auto& m : *plan) *first.add_plan() = m;
  writer->Write(first);
  if (request->dry_run()) return grpc::Status::OK;
  for (const auto& move : *plan) {
    v1::MigrateRequest m;
    m.set_vm_id(move.vm_id());
    m.set_target_node_id(move.target_node_id());
    auto send = [&](const MigrationProgress& p) {
      v1::RebalanceResponse msg;
      *msg.mutable_progress() = p;
      return !context->IsCancelled() && writer->Write(msg);
    };
    absl::StatusOr<MigrationProgress> r = MigrateVm(m, send);
    if (r.ok()) send(*r);
  }
  return grpc::Status::OK;
}

grpc::Status SchedulerServiceImpl::Pin(grpc::ServerContext*, const v1::PinRequest* request, v1::PinResponse* response) {
  ppn::fleet::v1::SetPinRequest req;
  req.set_vm_id(request->vm_id());
  req.set_node_id(request->node_id());
  if (request->node_id().empty()) return RpcFailed("Pin", absl::InvalidArgumentError("node_id is required"));
  ppn::fleet::v1::SetPinResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return fleet_->SetPin(c, req, &resp); });
  if (!s.ok()) return RpcFailed("Pin", s);
  response->set_node_id(resp.vm().pinned_node_id());
  spdlog::info("vm.pinned vm={} node={}", request->vm_id(), request->node_id());
  return grpc::Status::OK;
}

grpc::Status SchedulerServiceImpl::Unpin(grpc::ServerContext*, const v1::UnpinRequest* request, v1::UnpinResponse*) {
  ppn::fleet::v1::SetPinRequest req;
  req.set_vm_id(request->vm_id());
  ppn::fleet::v1::SetPinResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return fleet_->SetPin(c, req, &resp); });
  if (!s.ok()) return RpcFailed("Unpin", s);
  spdlog::info("vm.unpinned vm={}", request->vm_id());
  return grpc::Status::OK;
}

}  // namespace ppn::scheduler
