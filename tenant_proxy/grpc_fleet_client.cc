#include "tenant_proxy/grpc_fleet_client.h"

#include <algorithm>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/call_metadata.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/vm_spec.h"
#include "grpcpp/support/client_callback.h"
#include "spdlog/spdlog.h"

namespace ppn::proxy {
namespace {

using ppn::fleet::v1::WatchVmResponse;

std::string Shortage(const grpc::ClientContext& ctx) {
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto it = trailers.find(kShortageMetadata);
  return it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
}

// The fleet's own words stay in the proxy's debug log (they may name nodes); the tenant gets
// TenantSafeError's.
absl::Status Refused(const char* rpc, const TenantId& tenant, const grpc::ClientContext& ctx, const grpc::Status& s,
                     const CallAbout& about) {
  absl::Status fleet = FromGrpcStatus(s);
  spdlog::debug("fleet.refused rpc={} tenant={} code={} error={}", rpc, LogValue(tenant.value()),
                absl::StatusCodeToString(fleet.code()), LogValue(fleet.message()));
  return TenantSafeError(fleet, Shortage(ctx), about);
}

// One WatchVm stream: a client reactor that hands each message to the observer and reads
// the next only when asked, so a slow tenant slows the fleet stream instead of queuing.
// ReadNext comes from outside the reactor's own callbacks, so a hold keeps the call open
// between reads; it is released when the stream ends (a read fails) or when Cancel finds no
// read outstanding, and only then can OnDone run.
class GrpcFleetWatch final : public FleetWatch, public grpc::ClientReadReactor<WatchVmResponse> {
 public:
  GrpcFleetWatch(ppn::fleet::v1::FleetService::StubInterface* stub, const TenantId& tenant, const VmId& vm_id,
                 FleetWatchObserver* observer)
      : stub_(stub), observer_(observer), vm_id_(vm_id.value()) {
    ctx_.AddMetadata(kTenantMetadata, tenant.value());
    request_.set_vm_id(vm_id.value());
  }

  void Start() override {
    stub_->async()->WatchVm(&ctx_, &request_, this);
    {
      absl::MutexLock l(&mu_);
      held_ = true;
      reading_ = true;
    }
    AddHold();
    StartRead(&message_);
    StartCall();
  }
  void ReadNext() override {
    {
      absl::MutexLock l(&mu_);
      if (!held_ || reading_) return;  // over, or cancelled: nothing more to read
      reading_ = true;
    }
    StartRead(&message_);
  }
  void Cancel() override {
    ctx_.TryCancel();
    if (Release(/*only_if_idle=*/true)) RemoveHold();
  }

  void OnReadDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      reading_ = false;
    }
    if (ok) {
      observer_->OnWatchMessage(message_);
    } else if (Release(/*only_if_idle=*/false)) {
      RemoveHold();  // the stream is over; OnDone follows
    }
  }
  void OnDone(const grpc::Status& s) override {
    // The observer may destroy this object as soon as it is told: nothing after the call.
    FleetWatchObserver* observer = observer_;
    CallAbout about;
    about.vm_id = vm_id_;
    observer->OnWatchDone(s.ok() ? absl::OkStatus() : TenantSafeError(FromGrpcStatus(s), "", about));
  }

 private:
  // Gives up the hold once; true if the caller must call RemoveHold.
  bool Release(bool only_if_idle) {
    absl::MutexLock l(&mu_);
    if (!held_ || (only_if_idle && reading_)) return false;
    held_ = false;
    return true;
  }

  ppn::fleet::v1::FleetService::StubInterface* const stub_;
  FleetWatchObserver* const observer_;
  const std::string vm_id_;
  grpc::ClientContext ctx_;
  ppn::fleet::v1::WatchVmRequest request_;
  WatchVmResponse message_;
  absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;     // the hold that keeps the call open between reads
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // a read is outstanding
};

}  // namespace

void GrpcFleetClient::Prepare(grpc::ClientContext* ctx, const TenantId& tenant) const {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  ctx->AddMetadata(kTenantMetadata, tenant.value());
}

absl::StatusOr<ppn::fleet::v1::CreateVmResponse> GrpcFleetClient::CreateVm(
    const TenantId& tenant, const ppn::fleet::v1::CreateVmRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::CreateVmResponse response;
  grpc::Status s = stub_->CreateVm(&ctx, request, &response);
  if (!s.ok()) {
    CallAbout about;
    about.spec = &request.spec();
    about.request_id = request.request_id();
    about.chosen_id = request.vm_id();
    return Refused("CreateVm", tenant, ctx, s, about);
  }
  return response;
}

absl::StatusOr<ppn::fleet::v1::VmRecord> GrpcFleetClient::GetVm(const TenantId& tenant, const VmId& vm_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::GetVmRequest request;
  request.set_vm_id(vm_id.value());
  ppn::fleet::v1::GetVmResponse response;
  grpc::Status s = stub_->GetVm(&ctx, request, &response);
  if (!s.ok()) return Refused("GetVm", tenant, ctx, s, CallAbout{vm_id.value()});
  return response.vm();
}

absl::StatusOr<ppn::fleet::v1::ListVmsResponse> GrpcFleetClient::ListVms(
    const TenantId& tenant, const ppn::fleet::v1::ListVmsRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::ListVmsResponse response;
  grpc::Status s = stub_->ListVms(&ctx, request, &response);
  if (!s.ok()) {
    CallAbout about;
    about.list = true;
    return Refused("ListVms", tenant, ctx, s, about);
  }
  return response;
}

absl::StatusOr<ppn::fleet::v1::VmRecord> GrpcFleetClient::DestroyVm(const TenantId& tenant, const VmId& vm_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::DestroyVmRequest request;
  request.set_vm_id(vm_id.value());
  ppn::fleet::v1::DestroyVmResponse response;
  grpc::Status s = stub_->DestroyVm(&ctx, request, &response);
  if (!s.ok()) return Refused("DestroyVm", tenant, ctx, s, CallAbout{vm_id.value()});
  return response.vm();
}

absl::StatusOr<ppn::fleet::v1::VmRecord> GrpcFleetClient::UpdateVmNetwork(const TenantId& tenant, const VmId& vm_id,
                                                                          const ppn::types::v1::EgressPolicy& egress) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::UpdateVmNetworkRequest request;
  request.set_vm_id(vm_id.value());
  *request.mutable_egress() = egress;
  ppn::fleet::v1::UpdateVmNetworkResponse response;
  grpc::Status s = stub_->UpdateVmNetwork(&ctx, request, &response);
  if (!s.ok()) {
    CallAbout about{vm_id.value()};
    about.network = true;
    return Refused("UpdateVmNetwork", tenant, ctx, s, about);
  }
  return response.vm();
}

absl::StatusOr<ppn::fleet::v1::VmRecord> GrpcFleetClient::StopVm(const TenantId& tenant, const VmId& vm_id,
                                                                 absl::Duration grace) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  // A stop takes the grace period and then some: longer than the proxy's usual timeout.
  ctx.set_deadline(
      absl::ToChronoTime(absl::Now() + std::max(timeout_, std::max(grace, absl::Seconds(30)) + absl::Seconds(30))));
  ppn::fleet::v1::StopVmRequest request;
  request.set_vm_id(vm_id.value());
  *request.mutable_grace_period() = ToProtoDuration(grace);
  ppn::fleet::v1::StopVmResponse response;
  grpc::Status s = stub_->StopVm(&ctx, request, &response);
  if (!s.ok()) {
    CallAbout about{vm_id.value()};
    about.power = "stop";
    return Refused("StopVm", tenant, ctx, s, about);
  }
  return response.vm();
}

absl::StatusOr<ppn::fleet::v1::VmRecord> GrpcFleetClient::StartVm(const TenantId& tenant, const VmId& vm_id,
                                                                  bool fresh_disk) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + std::max(timeout_, absl::Seconds(70))));
  ppn::fleet::v1::StartVmRequest request;
  request.set_vm_id(vm_id.value());
  request.set_fresh_disk(fresh_disk);
  ppn::fleet::v1::StartVmResponse response;
  grpc::Status s = stub_->StartVm(&ctx, request, &response);
  if (!s.ok()) {
    CallAbout about{vm_id.value()};
    about.power = "start";
    return Refused("StartVm", tenant, ctx, s, about);
  }
  return response.vm();
}

absl::StatusOr<ppn::fleet::v1::VmRecord> GrpcFleetClient::RebootVm(const TenantId& tenant, const VmId& vm_id,
                                                                   absl::Duration grace, std::string* how) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ctx.set_deadline(
      absl::ToChronoTime(absl::Now() + std::max(timeout_, std::max(grace, absl::Seconds(30)) + absl::Seconds(70))));
  ppn::fleet::v1::RebootVmRequest request;
  request.set_vm_id(vm_id.value());
  *request.mutable_grace_period() = ToProtoDuration(grace);
  ppn::fleet::v1::RebootVmResponse response;
  grpc::Status s = stub_->RebootVm(&ctx, request, &response);
  if (!s.ok()) {
    CallAbout about{vm_id.value()};
    about.power = "reboot";
    return Refused("RebootVm", tenant, ctx, s, about);
  }
  *how = response.how();
  return response.vm();
}

absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> GrpcFleetClient::GetConsoleOutput(const TenantId& tenant,
                                                                                           const VmId& vm_id,
                                                                                           uint64_t offset,
                                                                                           uint32_t max_bytes) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::GetConsoleOutputRequest request;
  request.set_vm_id(vm_id.value());
  request.set_offset(offset);
  request.set_max_bytes(max_bytes);
  ppn::fleet::v1::GetConsoleOutputResponse response;
  grpc::Status s = stub_->GetConsoleOutput(&ctx, request, &response);
  if (!s.ok()) return Refused("GetConsoleOutput", tenant, ctx, s, CallAbout{vm_id.value()});
  return response;
}

namespace {
absl::Status NetworkRefused(const char* rpc, const TenantId& tenant, const grpc::Status& s,
                            const std::string& network_id, const std::string& name) {
  absl::Status fleet = FromGrpcStatus(s);
  spdlog::debug("fleet.refused rpc={} tenant={} code={} error={}", rpc, LogValue(tenant.value()),
                absl::StatusCodeToString(fleet.code()), LogValue(fleet.message()));
  return NetworkSafeError(fleet, network_id, name);
}
}  // namespace

absl::StatusOr<ppn::types::v1::Network> GrpcFleetClient::CreateNetwork(const TenantId& tenant,
                                                                       const std::string& name) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::CreateNetworkRequest request;
  request.set_name(name);
  ppn::fleet::v1::CreateNetworkResponse response;
  grpc::Status s = stub_->CreateNetwork(&ctx, request, &response);
  if (!s.ok()) return NetworkRefused("CreateNetwork", tenant, s, "", name);
  return response.network();
}

absl::StatusOr<ppn::types::v1::Network> GrpcFleetClient::GetNetwork(const TenantId& tenant,
                                                                    const std::string& network_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::GetNetworkRequest request;
  request.set_network_id(network_id);
  ppn::fleet::v1::GetNetworkResponse response;
  grpc::Status s = stub_->GetNetwork(&ctx, request, &response);
  if (!s.ok()) return NetworkRefused("GetNetwork", tenant, s, network_id, "");
  return response.network();
}

absl::StatusOr<std::vector<ppn::types::v1::Network>> GrpcFleetClient::ListNetworks(const TenantId& tenant) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::ListNetworksResponse response;
  grpc::Status s = stub_->ListNetworks(&ctx, ppn::fleet::v1::ListNetworksRequest(), &response);
  if (!s.ok()) return NetworkRefused("ListNetworks", tenant, s, "", "");
  return std::vector<ppn::types::v1::Network>(response.networks().begin(), response.networks().end());
}

absl::Status GrpcFleetClient::DeleteNetwork(const TenantId& tenant, const std::string& network_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx, tenant);
  ppn::fleet::v1::DeleteNetworkRequest request;
  request.set_network_id(network_id);
  ppn::fleet::v1::DeleteNetworkResponse response;
  grpc::Status s = stub_->DeleteNetwork(&ctx, request, &response);
  if (!s.ok()) return NetworkRefused("DeleteNetwork", tenant, s, network_id, "");
  return absl::OkStatus();
}

std::unique_ptr<FleetWatch> GrpcFleetClient::WatchVm(const TenantId& tenant, const VmId& vm_id,
                                                     FleetWatchObserver* observer) {
  // No deadline: a watch lasts as long as the tenant keeps it open.
  return std::make_unique<GrpcFleetWatch>(stub_, tenant, vm_id, observer);
}

}  // namespace ppn::proxy
