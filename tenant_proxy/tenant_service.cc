#include "tenant_proxy/tenant_service.h"

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/rpc_log.h"
#include "common/vm_spec.h"
#include "grpcpp/support/server_callback.h"
#include "spdlog/spdlog.h"
#include "tenant_proxy/bearer_auth_processor.h"

namespace ppn::proxy {
namespace {

using ppn::tenancy::v1::WatchVmResponse;

// A stream refused before it started.
class RefusedWatch final : public grpc::ServerWriteReactor<WatchVmResponse> {
 public:
  explicit RefusedWatch(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// One tenant WatchVm stream relayed from one fleet stream, one message at a time: the next
// fleet message is read only once the tenant has taken the last, so a slow tenant holds back
// the fleet instead of filling the proxy's memory. Owns itself (deleted in OnDone, after the
// fleet stream is over: Finish is only called once it is).
class WatchRelay final : public grpc::ServerWriteReactor<WatchVmResponse>, public FleetWatchObserver {
 public:
  explicit WatchRelay(std::string tenant_id) : tenant_id_(std::move(tenant_id)) {}

  // Takes the fleet stream (opened with this as its observer) and starts it.
  void Start(std::unique_ptr<FleetWatch> fleet) {
    fleet_ = std::move(fleet);
    fleet_->Start();
  }

  void OnWatchMessage(const ppn::fleet::v1::WatchVmResponse& message) override {
    *out_.mutable_vm() = TenantView(message.vm());
    *out_.mutable_observe_time() = message.observe_time();
    {
      absl::MutexLock l(&mu_);
      writing_ = true;
    }
    StartWrite(&out_);
  }
  void OnWriteDone(bool ok) override {
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      finish = fleet_status_.has_value();
    }
    if (finish) {
      FinishWith();
    } else if (ok) {
      fleet_->ReadNext();
    } else {
      fleet_->Cancel();  // the tenant is gone; OnWatchDone follows
    }
  }
  void OnWatchDone(const absl::Status& status) override {
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      fleet_status_ = status;
      finish = !writing_;
    }
    if (finish) FinishWith();
  }
  // The tenant cancelled (or its deadline passed): end the fleet stream too.
  void OnCancel() override { fleet_->Cancel(); }
  void OnDone() override { delete this; }

 private:
  void FinishWith() {
    absl::Status s;
    {
      absl::MutexLock l(&mu_);
      s = *fleet_status_;
    }
    if (s.code() == absl::StatusCode::kCancelled) {
      Finish(grpc::Status::CANCELLED);
    } else if (!s.ok()) {
      Finish(RpcFailed("WatchVm", s, {{"tenant", tenant_id_}}));
    } else {
      Finish(grpc::Status::OK);
    }
  }

  const std::string tenant_id_;
  std::unique_ptr<FleetWatch> fleet_;  // set before it starts; destroyed with the relay
  WatchVmResponse out_;                // the one message being written
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> fleet_status_ ABSL_GUARDED_BY(mu_);  // set once the fleet stream ended
};

}  // namespace

absl::StatusOr<Tenant> TenantServiceImpl::Admit(grpc::ServerContextBase* context) {
  absl::StatusOr<Authenticated> who = TenantOf(*authenticator_, *context);
  if (!who.ok()) return who.status();
  absl::Duration retry_after;
  absl::StatusOr<Tenant> tenant = core_->Admit(*who, &retry_after);
  if (retry_after > absl::ZeroDuration()) {
    context->AddTrailingMetadata(kRetryAfterMetadata, absl::StrCat(absl::ToInt64Milliseconds(retry_after)));
  }
  return tenant;
}

grpc::Status TenantServiceImpl::CreateVm(grpc::ServerContext* context, const tenancy::v1::CreateVmRequest* request,
                                         tenancy::v1::CreateVmResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("CreateVm", tenant.status());
  absl::StatusOr<tenancy::v1::Vm> vm = core_->CreateVm(*tenant, *request);
  if (!vm.ok()) return RpcFailed("CreateVm", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  if (request->wait_for_ready() && vm->state() != ppn::types::v1::VM_STATE_RUNNING) {
    // Bounded by the caller's deadline (never by more than ten minutes).
    absl::Time deadline = std::min(absl::FromChrono(context->deadline()), absl::Now() + absl::Minutes(10));
    vm = core_->WaitForReady(*tenant, vm->vm_id(), deadline);
    if (!vm.ok()) return RpcFailed("CreateVm", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  }
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::GetVm(grpc::ServerContext* context, const tenancy::v1::GetVmRequest* request,
                                      tenancy::v1::GetVmResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("GetVm", tenant.status());
  absl::StatusOr<tenancy::v1::Vm> vm = core_->GetVm(*tenant, request->name());
  if (!vm.ok()) return RpcFailed("GetVm", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::ListVms(grpc::ServerContext* context, const tenancy::v1::ListVmsRequest* request,
                                        tenancy::v1::ListVmsResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("ListVms", tenant.status());
  absl::StatusOr<tenancy::v1::ListVmsResponse> list = core_->ListVms(*tenant, *request);
  if (!list.ok()) return RpcFailed("ListVms", list.status(), {{"tenant", tenant->tenant_id.value()}});
  *response = *std::move(list);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::DestroyVm(grpc::ServerContext* context, const tenancy::v1::DestroyVmRequest* request,
                                          tenancy::v1::DestroyVmResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("DestroyVm", tenant.status());
  absl::StatusOr<tenancy::v1::Vm> vm = core_->DestroyVm(*tenant, request->name());
  if (!vm.ok()) return RpcFailed("DestroyVm", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<WatchVmResponse>* TenantServiceImpl::WatchVm(grpc::CallbackServerContext* context,
                                                                      const tenancy::v1::WatchVmRequest* request) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return new RefusedWatch(RpcFailed("WatchVm", tenant.status()));
  auto relay = std::make_unique<WatchRelay>(tenant->tenant_id.value());
  absl::StatusOr<std::unique_ptr<FleetWatch>> fleet = core_->OpenWatch(*tenant, request->name(), relay.get());
  if (!fleet.ok()) {
    return new RefusedWatch(RpcFailed("WatchVm", fleet.status(), {{"tenant", tenant->tenant_id.value()}}));
  }
  relay->Start(*std::move(fleet));
  return relay.release();
}

grpc::Status TenantServiceImpl::GetQuota(grpc::ServerContext* context, const tenancy::v1::GetQuotaRequest*,
                                         tenancy::v1::GetQuotaResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("GetQuota", tenant.status());
  absl::StatusOr<tenancy::v1::GetQuotaResponse> quota = core_->GetQuota(*tenant);
  if (!quota.ok()) return RpcFailed("GetQuota", quota.status(), {{"tenant", tenant->tenant_id.value()}});
  *response = *std::move(quota);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::UpdateVmNetwork(grpc::ServerContext* context,
                                                const tenancy::v1::UpdateVmNetworkRequest* request,
                                                tenancy::v1::UpdateVmNetworkResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("UpdateVmNetwork", tenant.status());
  absl::StatusOr<tenancy::v1::Vm> vm = core_->UpdateVmNetwork(*tenant, *request);
  if (!vm.ok()) return RpcFailed("UpdateVmNetwork", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::CreateNetwork(grpc::ServerContext* context,
                                              const tenancy::v1::CreateNetworkRequest* request,
                                              tenancy::v1::CreateNetworkResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("CreateNetwork", tenant.status());
  absl::StatusOr<ppn::types::v1::Network> n = core_->CreateNetwork(*tenant, *request);
  if (!n.ok()) return RpcFailed("CreateNetwork", n.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_network() = *std::move(n);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::GetNetwork(grpc::ServerContext* context, const tenancy::v1::GetNetworkRequest* request,
                                           tenancy::v1::GetNetworkResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("GetNetwork", tenant.status());
  absl::StatusOr<ppn::types::v1::Network> n = core_->GetNetwork(*tenant, request->network_id());
  if (!n.ok()) return RpcFailed("GetNetwork", n.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_network() = *std::move(n);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::ListNetworks(grpc::ServerContext* context, const tenancy::v1::ListNetworksRequest*,
                                             tenancy::v1::ListNetworksResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("ListNetworks", tenant.status());
  absl::StatusOr<tenancy::v1::ListNetworksResponse> list = core_->ListNetworks(*tenant);
  if (!list.ok()) return RpcFailed("ListNetworks", list.status(), {{"tenant", tenant->tenant_id.value()}});
  *response = *std::move(list);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::DeleteNetwork(grpc::ServerContext* context,
                                              const tenancy::v1::DeleteNetworkRequest* request,
                                              tenancy::v1::DeleteNetworkResponse*) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("DeleteNetwork", tenant.status());
  absl::Status s = core_->DeleteNetwork(*tenant, request->network_id());
  if (!s.ok()) return RpcFailed("DeleteNetwork", s, {{"tenant", tenant->tenant_id.value()}});
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::StopVm(grpc::ServerContext* context, const tenancy::v1::StopVmRequest* request,
                                       tenancy::v1::StopVmResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("StopVm", tenant.status());
  absl::Duration grace;
  absl::Status valid = ToGracePeriod(request->grace_period(), &grace);
  if (!valid.ok()) return RpcFailed("StopVm", valid, {{"tenant", tenant->tenant_id.value()}});
  absl::StatusOr<tenancy::v1::Vm> vm = core_->StopVm(*tenant, request->name(), grace);
  if (!vm.ok()) return RpcFailed("StopVm", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::StartVm(grpc::ServerContext* context, const tenancy::v1::StartVmRequest* request,
                                        tenancy::v1::StartVmResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("StartVm", tenant.status());
  absl::StatusOr<tenancy::v1::Vm> vm = core_->StartVm(*tenant, request->name(), request->fresh_disk());
  if (!vm.ok()) return RpcFailed("StartVm", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::RebootVm(grpc::ServerContext* context, const tenancy::v1::RebootVmRequest* request,
                                         tenancy::v1::RebootVmResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("RebootVm", tenant.status());
  absl::Duration grace;
  absl::Status valid = ToGracePeriod(request->grace_period(), &grace);
  if (!valid.ok()) return RpcFailed("RebootVm", valid, {{"tenant", tenant->tenant_id.value()}});
  std::string how;
  absl::StatusOr<tenancy::v1::Vm> vm = core_->RebootVm(*tenant, request->name(), grace, &how);
  if (!vm.ok()) return RpcFailed("RebootVm", vm.status(), {{"tenant", tenant->tenant_id.value()}});
  *response->mutable_vm() = *std::move(vm);
  response->set_how(how);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::GetConsoleOutput(grpc::ServerContext* context,
                                                 const tenancy::v1::GetConsoleOutputRequest* request,
                                                 tenancy::v1::GetConsoleOutputResponse* response) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("GetConsoleOutput", tenant.status());
  absl::StatusOr<size_t> max_bytes = ToConsoleReadBytes(request->max_bytes());
  if (!max_bytes.ok()) return RpcFailed("GetConsoleOutput", max_bytes.status());
  absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> out =
      core_->GetConsoleOutput(*tenant, request->name(), request->offset(), static_cast<uint32_t>(*max_bytes));
  if (!out.ok()) return RpcFailed("GetConsoleOutput", out.status(), {{"tenant", tenant->tenant_id.value()}});
  response->set_data(std::move(*out->mutable_data()));
  response->set_next_offset(out->next_offset());
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::StreamConsole(grpc::ServerContext* context,
                                              const tenancy::v1::StreamConsoleRequest* request,
                                              grpc::ServerWriter<tenancy::v1::StreamConsoleResponse>* writer) {
  absl::StatusOr<Tenant> tenant = Admit(context);
  if (!tenant.ok()) return RpcFailed("StreamConsole", tenant.status());
  const std::string tid = tenant->tenant_id.value();
  {
    absl::MutexLock l(&console_mu_);
    if (console_streams_[tid] >= kConsoleStreamsPerTenant) {
      return RpcFailed("StreamConsole",
                       absl::ResourceExhaustedError(
                           absl::StrCat("at most ", kConsoleStreamsPerTenant, " console streams may be open at once")));
    }
    ++console_streams_[tid];
  }
  struct Release {
    TenantServiceImpl* self;
    std::string tenant;
    ~Release() {
      absl::MutexLock l(&self->console_mu_);
      if (--self->console_streams_[tenant] == 0) self->console_streams_.erase(tenant);
    }
  } release{this, tid};
  uint64_t offset = request->offset();
  for (bool first = true; !context->IsCancelled(); first = false) {
    absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> out =
        core_->GetConsoleOutput(*tenant, request->name(), offset, 64 << 10);
    if (!out.ok()) {
      // Destroyed after the stream began: the stream ends there; a host away for a moment is
      // waited out.
      if (!first && out.status().code() == absl::StatusCode::kNotFound) break;
      if (!first && out.status().code() == absl::StatusCode::kUnavailable) {
        absl::SleepFor(absl::Seconds(1));
        continue;
      }
      return RpcFailed("StreamConsole", out.status(), {{"tenant", tid}});
    }
    if (out->next_offset() != offset) {
      tenancy::v1::StreamConsoleResponse msg;
      msg.set_data(std::move(*out->mutable_data()));
      msg.set_next_offset(out->next_offset());
      if (!writer->Write(msg)) break;
      offset = msg.next_offset();
      continue;
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
  return grpc::Status::OK;
}

}  // namespace ppn::proxy
