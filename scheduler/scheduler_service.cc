#include "scheduler/scheduler_service.h"

#include "common/peer_identity.h"
#include "common/rpc_log.h"

namespace ppn::scheduler {
namespace {

// The caller's identity for the ledger ("spiffe://mesh/operator/alice"); the role check has
// already admitted it.
std::string Caller(const grpc::ServerContext& context) {
  absl::StatusOr<SpiffeId> peer = PeerSpiffeId(context);
  return peer.ok() ? peer->ToString() : "";
}

void ToProto(const PlannedMove& m, v1::PlannedMove* out) {
  out->set_vm_id(m.vm.value());
  out->set_source_node_id(m.source.value());
  out->set_target_node_id(m.target.value());
  out->set_reason(m.reason);
}

// A ProgressFn writing each report as a `Response` of a server stream.
template <typename Response>
ProgressFn Writer(grpc::ServerContext* context, grpc::ServerWriter<Response>* writer) {
  return [context, writer](const MigrationProgress& p) {
    Response msg;
    *msg.mutable_progress() = p;
    return !context->IsCancelled() && writer->Write(msg);
  };
}

}  // namespace

grpc::Status SchedulerService::Migrate(grpc::ServerContext* context, const v1::MigrateRequest* request,
                                       grpc::ServerWriter<v1::MigrateResponse>* writer) {
  ProgressFn send = Writer(context, writer);
  MigrationRequest typed{VmId(request->vm_id()), NodeId(request->target_node_id()),
                         request->max_bandwidth_mib_per_second()};
  absl::StatusOr<MigrationProgress> final_report = core_->Migrate(typed, send);
  if (!final_report.ok()) return RpcFailed("Migrate", final_report.status(), {{"vm", request->vm_id()}});
  send(*final_report);
  return grpc::Status::OK;
}

grpc::Status SchedulerService::Drain(grpc::ServerContext* context, const v1::DrainRequest* request,
                                     grpc::ServerWriter<v1::DrainResponse>* writer) {
  auto on_plan = [&](const DrainPlan& plan) {
    v1::DrainResponse first;
    for (const PlannedMove& m : plan.moves) ToProto(m, first.add_plan());
    for (const VmId& v : plan.pinned) first.add_pinned_vm_ids(v.value());
    return writer->Write(first);
  };
  absl::Status s =
      core_->Drain(NodeId(request->node_id()), request->dry_run(), Caller(*context), on_plan, Writer(context, writer));
  if (!s.ok()) return RpcFailed("Drain", s, {{"node", request->node_id()}});
  return grpc::Status::OK;
}

grpc::Status SchedulerService::Rebalance(grpc::ServerContext* context, const v1::RebalanceRequest* request,
                                         grpc::ServerWriter<v1::RebalanceResponse>* writer) {
  auto on_plan = [&](const RebalancePlan& plan) {
    v1::RebalanceResponse first;
    for (const PlannedMove& m : plan.moves) ToProto(m, first.add_plan());
    return writer->Write(first);
  };
  absl::Status s = core_->Rebalance(request->dry_run(), Caller(*context), on_plan, Writer(context, writer));
  if (!s.ok()) return RpcFailed("Rebalance", s);
  return grpc::Status::OK;
}

grpc::Status SchedulerService::Pin(grpc::ServerContext* context, const v1::PinRequest* request,
                                   v1::PinResponse* response) {
  absl::StatusOr<NodeId> node = core_->Pin(VmId(request->vm_id()), NodeId(request->node_id()), Caller(*context));
  if (!node.ok()) return RpcFailed("Pin", node.status(), {{"vm", request->vm_id()}});
  response->set_node_id(node->value());
  return grpc::Status::OK;
}

grpc::Status SchedulerService::Unpin(grpc::ServerContext* context, const v1::UnpinRequest* request,
                                     v1::UnpinResponse*) {
  absl::Status s = core_->Unpin(VmId(request->vm_id()), Caller(*context));
  if (!s.ok()) return RpcFailed("Unpin", s, {{"vm", request->vm_id()}});
  return grpc::Status::OK;
}

}  // namespace ppn::scheduler
