#include "fleet/grpc_agent_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/rpc_interceptors.h"
#include "common/vm_spec.h"
#include "grpcpp/create_channel.h"

namespace ppn::fleet {
namespace {

class GrpcAgentClient final : public AgentClient {
 public:
  GrpcAgentClient(std::string node_id, std::shared_ptr<grpc::Channel> channel)
      : node_id_(std::move(node_id)), stub_(ppn::host::v1::HostAgent::NewStub(channel)) {}

  absl::StatusOr<ppn::host::v1::VmInstance> SpawnVm(
      const VmId& vm, const TenantId& tenant, const ppn::types::v1::VmSpec& spec,
      const google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>& nics) override {
    ppn::host::v1::SpawnVmRequest req;
    req.set_vm_id(vm.value());
    req.set_tenant_id(tenant.value());
    *req.mutable_spec() = spec;
    *req.mutable_private_nics() = nics;
    ppn::host::v1::SpawnVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    absl::Status s = Named(stub_->SpawnVm(&ctx, req, &resp));
    if (!s.ok()) return s;
    return resp.vm();
  }

  absl::Status DestroyVm(const VmId& vm) override {
    ppn::host::v1::DestroyVmRequest req;
    req.set_vm_id(vm.value());
    ppn::host::v1::DestroyVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return Named(stub_->DestroyVm(&ctx, req, &resp));
  }

  absl::StatusOr<ppn::host::v1::VmInstance> ResumeVm(const VmId& vm) override {
    ppn::host::v1::ResumeVmRequest req;
    req.set_vm_id(vm.value());
    ppn::host::v1::ResumeVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    absl::Status s = Named(stub_->ResumeVm(&ctx, req, &resp));
    if (!s.ok()) return s;
    return resp.vm();
  }

  absl::StatusOr<ppn::host::v1::VmInstance> StopVm(const VmId& vm, absl::Duration grace) override {
    ppn::host::v1::StopVmRequest req;
    req.set_vm_id(vm.value());
    *req.mutable_grace_period() = ToProtoDuration(grace);
    ppn::host::v1::StopVmResponse resp;
    grpc::ClientContext ctx;
    // The grace period, then SIGTERM and SIGKILL (5 s each), and some slack.
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + std::max(grace, absl::Seconds(30)) + absl::Seconds(20)));
    absl::Status s = Named(stub_->StopVm(&ctx, req, &resp));
    if (!s.ok()) return s;
    return resp.vm();
  }

  absl::StatusOr<ppn::host::v1::VmInstance> StartVm(const VmId& vm) override {
    ppn::host::v1::StartVmRequest req;
    req.set_vm_id(vm.value());
    ppn::host::v1::StartVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    absl::Status s = Named(stub_->StartVm(&ctx, req, &resp));
    if (!s.ok()) return s;
    return resp.vm();
  }

  absl::StatusOr<ppn::host::v1::VmInstance> RebootVm(const VmId& vm, absl::Duration grace, std::string* how) override {
    ppn::host::v1::RebootVmRequest req;
    req.set_vm_id(vm.value());
    *req.mutable_grace_period() = ToProtoDuration(grace);
    ppn::host::v1::RebootVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + std::max(grace, absl::Seconds(30)) + absl::Seconds(60)));
    absl::Status s = Named(stub_->RebootVm(&ctx, req, &resp));
    if (!s.ok()) return s;
    *how = resp.how();
    return resp.vm();
  }

  absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> GetConsoleOutput(const VmId& vm, uint64_t offset,
                                                                           uint32_t max_bytes) override {
    ppn::host::v1::GetConsoleOutputRequest req;
    req.set_vm_id(vm.value());
    req.set_offset(offset);
    req.set_max_bytes(max_bytes);
    ppn::host::v1::GetConsoleOutputResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    absl::Status s = Named(stub_->GetConsoleOutput(&ctx, req, &resp));
    if (!s.ok()) return s;
    return resp;
  }

  absl::Status SetNetworkPeers(const ppn::host::v1::SetNetworkPeersRequest& request) override {
    ppn::host::v1::SetNetworkPeersResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return Named(stub_->SetNetworkPeers(&ctx, request, &resp));
  }

  absl::StatusOr<ppn::host::v1::VmInstance> UpdateVmNetwork(const VmId& vm,
                                                            const ppn::types::v1::EgressPolicy& egress) override {
    ppn::host::v1::UpdateVmNetworkRequest req;
    req.set_vm_id(vm.value());
    *req.mutable_egress() = egress;
    ppn::host::v1::UpdateVmNetworkResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    absl::Status s = Named(stub_->UpdateVmNetwork(&ctx, req, &resp));
    if (!s.ok()) return s;
    return resp.vm();
  }

 private:
  // Says which node answered, so the fleet's caller can tell.
  absl::Status Named(const grpc::Status& s) {
    if (s.ok()) return absl::OkStatus();
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(absl::StrCat("node ", node_id_, " is unreachable: ", s.error_message()));
    }
    return FromGrpcStatus(s);
  }

  const std::string node_id_;
  std::unique_ptr<ppn::host::v1::HostAgent::Stub> stub_;
};

}  // namespace

std::shared_ptr<grpc::Channel> GrpcAgentClientFactory::Channel(const std::string& address) {
  // A node whose machine (or container) vanished never closes its TCP connection, and a
  // heartbeat stream would wait on it forever, even once the node is back. Keepalive pings on
  // open calls find a dead connection within 30 s (unlimited: the fleet sends nothing on a
  // stream after its request; the agent's heartbeats keep the pings welcome), and a node that
  // comes back is dialled again within 5 s.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  return ppn::MeshChannel(address, MtlsChannelCredentials(tls_), args);
}

AgentClient* GrpcAgentClientFactory::ForNode(const std::string& node_id, const std::string& address) {
  absl::MutexLock l(&mu_);
  std::unique_ptr<AgentClient>& client = clients_[node_id + "@" + address];
  if (client == nullptr) client = std::make_unique<GrpcAgentClient>(node_id, Channel(address));
  return client.get();
}

}  // namespace ppn::fleet
