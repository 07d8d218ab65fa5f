#include "scheduler/grpc_peers.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/rpc_interceptors.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "grpcpp/create_channel.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"

namespace ppn::scheduler {
namespace {

using ppn::fleet::v1::VmRecord;

// Runs one unary call with a deadline of `seconds`.
template <typename Fn>
absl::Status Call(Fn fn, int seconds = 30) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return FromGrpcStatus(fn(&ctx));
}

class GrpcAgentPeer final : public AgentPeer {
 public:
  explicit GrpcAgentPeer(std::shared_ptr<grpc::Channel> channel) : stub_(ppn::host::v1::HostAgent::NewStub(channel)) {}

  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> PrepareIncoming(const IncomingVm& vm) override {
    ppn::host::v1::PrepareIncomingRequest req;
    req.set_vm_id(vm.vm.value());
    req.set_tenant_id(vm.tenant.value());
    *req.mutable_spec() = vm.spec;
    req.set_accelerator(vm.accelerator);
    *req.mutable_ready_timeout() = ToProtoDuration(vm.ready_timeout);
    req.set_source_node_id(vm.source.value());
    *req.mutable_private_nics() = vm.private_nics;
    ppn::host::v1::PrepareIncomingResponse resp;
    // Preparing starts a QEMU: slow on a loaded TCG host.
    PPN_RETURN_IF_ERROR(Call([&](grpc::ClientContext* c) { return stub_->PrepareIncoming(c, req, &resp); }, 90));
    return resp;
  }

  absl::StatusOr<MigrationProgress> MigrateOut(const OutgoingMigration& m, const ProgressFn& progress) override {
    ppn::host::v1::MigrateOutRequest req;
    req.set_vm_id(m.vm.value());
    req.set_migration_uri(m.migration_uri);
    req.set_disk_nbd_uri(m.disk_nbd_uri);
    req.set_max_bandwidth_mib_per_second(m.max_bandwidth_mib_per_second);
    req.set_target_node_id(m.target.value());
    req.set_migration_ticket(m.migration_ticket);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(15));
    auto reader = stub_->MigrateOut(&ctx, req);
    ppn::host::v1::MigrateOutResponse msg;
    MigrationProgress last;
    bool any = false;
    while (reader->Read(&msg)) {
      last = msg.progress();
      any = true;
      bool final_report = last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED ||
                          last.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED;
      if (!final_report && !progress(last)) ctx.TryCancel();
    }
    absl::Status s = FromGrpcStatus(reader->Finish());
    if (!s.ok()) return s;
    if (!any) return absl::UnknownError("the source ended the migration stream without a report");
    return last;
  }

  absl::StatusOr<std::vector<ppn::host::v1::VmInstance>> ListVms() override {
    ppn::host::v1::ListVmsResponse resp;
    absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->ListVms(c, {}, &resp); }, 10);
    if (!s.ok()) return s;
    return std::vector<ppn::host::v1::VmInstance>(resp.vms().begin(), resp.vms().end());
  }

  absl::Status DestroyVm(const VmId& vm) override {
    ppn::host::v1::DestroyVmRequest req;
    req.set_vm_id(vm.value());
    ppn::host::v1::DestroyVmResponse resp;
    return Call([&](grpc::ClientContext* c) { return stub_->DestroyVm(c, req, &resp); });
  }

  absl::StatusOr<ppn::host::v1::VmInstance> ResumeVm(const VmId& vm) override {
    ppn::host::v1::ResumeVmRequest req;
    req.set_vm_id(vm.value());
    ppn::host::v1::ResumeVmResponse resp;
    absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->ResumeVm(c, req, &resp); });
    if (!s.ok()) return s;
    return resp.vm();
  }

 private:
  std::unique_ptr<ppn::host::v1::HostAgent::Stub> stub_;
};

}  // namespace

GrpcFleetPeer::GrpcFleetPeer(const std::string& address, const TlsFiles& tls)
    : stub_(ppn::fleet::v1::FleetService::NewStub(ppn::MeshChannel(address, MtlsChannelCredentials(tls)))) {}

absl::StatusOr<ppn::fleet::v1::PlacementDecision> GrpcFleetPeer::ExplainPlacement(const ppn::types::v1::VmSpec& spec,
                                                                                  const std::vector<NodeId>& excluded) {
  ppn::fleet::v1::ExplainPlacementRequest req;
  *req.mutable_spec() = spec;
  for (const NodeId& n : excluded) req.add_excluded_node_ids(n.value());
  ppn::fleet::v1::ExplainPlacementResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->ExplainPlacement(c, req, &resp); });
  if (!s.ok()) return s;
  return resp.decision();
}

absl::StatusOr<VmRecord> GrpcFleetPeer::GetVm(const VmId& vm) {
  ppn::fleet::v1::GetVmRequest req;
  req.set_vm_id(vm.value());
  ppn::fleet::v1::GetVmResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->GetVm(c, req, &resp); });
  if (!s.ok()) return s;
  return resp.vm();
}

absl::StatusOr<std::vector<VmRecord>> GrpcFleetPeer::ListVms(const NodeId& node) {
  std::vector<VmRecord> all;
  ppn::fleet::v1::ListVmsRequest req;
  req.set_node_id(node.value());
  req.set_page_size(1000);
  do {
    ppn::fleet::v1::ListVmsResponse resp;
    absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->ListVms(c, req, &resp); });
    if (!s.ok()) return s;
    all.insert(all.end(), resp.vms().begin(), resp.vms().end());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return all;
}

absl::StatusOr<std::vector<ppn::fleet::v1::Node>> GrpcFleetPeer::ListNodes() {
  ppn::fleet::v1::ListNodesResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->ListNodes(c, {}, &resp); });
  if (!s.ok()) return s;
  return std::vector<ppn::fleet::v1::Node>(resp.nodes().begin(), resp.nodes().end());
}

absl::StatusOr<VmRecord> GrpcFleetPeer::RecordMigration(const VmId& vm, const NodeId& source, const NodeId& target,
                                                        const Ports& ports) {
  ppn::fleet::v1::RecordMigrationRequest req;
  req.set_vm_id(vm.value());
  req.set_source_node_id(source.value());
  req.set_target_node_id(target.value());
  *req.mutable_forwarded_ports() = ports;
  ppn::fleet::v1::RecordMigrationResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->RecordMigration(c, req, &resp); }, 10);
  if (!s.ok()) return s;
  return resp.vm();
}

absl::StatusOr<VmRecord> GrpcFleetPeer::SetPin(const VmId& vm, const NodeId& node) {
  ppn::fleet::v1::SetPinRequest req;
  req.set_vm_id(vm.value());
  req.set_node_id(node.value());
  ppn::fleet::v1::SetPinResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->SetPin(c, req, &resp); });
  if (!s.ok()) return s;
  return resp.vm();
}

absl::StatusOr<ppn::fleet::v1::Node> GrpcFleetPeer::CordonNode(const NodeId& node, const std::string& reason) {
  ppn::fleet::v1::CordonNodeRequest req;
  req.set_node_id(node.value());
  req.set_reason(reason);
  ppn::fleet::v1::CordonNodeResponse resp;
  absl::Status s = Call([&](grpc::ClientContext* c) { return stub_->CordonNode(c, req, &resp); });
  if (!s.ok()) return s;
  return resp.node();
}

AgentPeer* GrpcAgentPeers::ForNode(const NodeId& node, const std::string& address) {
  absl::MutexLock l(&mu_);
  std::unique_ptr<AgentPeer>& peer = peers_[absl::StrCat(node.value(), "@", address)];
  if (peer == nullptr) peer = std::make_unique<GrpcAgentPeer>(ppn::MeshChannel(address, MtlsChannelCredentials(tls_)));
  return peer.get();
}

}  // namespace ppn::scheduler
