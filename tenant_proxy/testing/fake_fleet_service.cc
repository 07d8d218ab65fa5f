#include "tenant_proxy/testing/fake_fleet_service.h"

#include "absl/strings/str_cat.h"
#include "common/call_metadata.h"
#include "common/roles.h"
#include "grpcpp/server_builder.h"

namespace ppn::proxy::testing {

void FakeFleetService::FailNext(grpc::Status status, std::multimap<std::string, std::string> trailers) {
  absl::MutexLock l(&mu_);
  fail_next_ = std::move(status);
  fail_trailers_ = std::move(trailers);
}

void FakeFleetService::OnCreate(std::function<void(const ppn::fleet::v1::CreateVmRequest&)> hook) {
  absl::MutexLock l(&mu_);
  on_create_ = std::move(hook);
}

std::vector<FakeFleetService::Seen> FakeFleetService::seen() {
  absl::MutexLock l(&mu_);
  return seen_;
}

int FakeFleetService::creates() {
  absl::MutexLock l(&mu_);
  return creates_;
}

std::optional<ppn::fleet::v1::VmRecord> FakeFleetService::FindByRequestId(const std::string& request_id) {
  absl::MutexLock l(&mu_);
  for (const auto& [id, vm] : vms_) {
    if (vm.request_id() == request_id) return vm;
  }
  return std::nullopt;
}

int FakeFleetService::open_watches() {
  absl::MutexLock l(&mu_);
  return open_watches_;
}

int FakeFleetService::cancelled_watches() {
  absl::MutexLock l(&mu_);
  return cancelled_watches_;
}

std::optional<grpc::Status> FakeFleetService::Begin(grpc::ServerContext* context, const char* rpc,
                                                    const std::string& request_id) {
  Seen seen;
  seen.rpc = rpc;
  auto it = context->client_metadata().find(kTenantMetadata);
  if (it != context->client_metadata().end()) seen.tenant = std::string(it->second.data(), it->second.size());
  absl::Time deadline = absl::FromChrono(context->deadline());
  seen.deadline_left =
      deadline > absl::Now() + absl::Hours(24 * 365) ? absl::InfiniteDuration() : deadline - absl::Now();
  seen.request_id = request_id;
  absl::MutexLock l(&mu_);
  seen_.push_back(seen);
  if (!fail_next_.has_value()) return std::nullopt;
  std::optional<grpc::Status> fail;
  fail.swap(fail_next_);
  for (const auto& [k, v] : fail_trailers_) context->AddTrailingMetadata(k, v);
  fail_trailers_.clear();
  return fail;
}

grpc::Status FakeFleetService::CreateVm(grpc::ServerContext* context, const ppn::fleet::v1::CreateVmRequest* request,
                                        ppn::fleet::v1::CreateVmResponse* response) {
  if (auto fail = Begin(context, "CreateVm", request->request_id())) return *fail;
  std::string tenant = seen().back().tenant;
  std::function<void(const ppn::fleet::v1::CreateVmRequest&)> hook;
  {
    absl::MutexLock l(&mu_);
    ++creates_;
    for (const auto& [id, vm] : vms_) {
      if (!request->request_id().empty() && vm.tenant_id() == tenant && vm.request_id() == request->request_id()) {
        *response->mutable_vm() = vm;
        response->set_replayed(true);
        return grpc::Status::OK;
      }
    }
    ppn::fleet::v1::VmRecord& r = vms_[absl::StrCat("vm-", ++next_id_)];
    r.set_vm_id(absl::StrCat("vm-", next_id_));
    r.set_tenant_id(tenant);
    r.set_node_id("secret-node-7");
    *r.mutable_spec() = request->spec();
    r.set_state(ppn::types::v1::VM_STATE_RUNNING);
    r.set_request_id(request->request_id());
    *response->mutable_vm() = r;
    ++version_;
    changed_.SignalAll();
    hook = on_create_;
  }
  if (hook) hook(*request);
  return grpc::Status::OK;
}

grpc::Status FakeFleetService::GetVm(grpc::ServerContext* context, const ppn::fleet::v1::GetVmRequest* request,
                                     ppn::fleet::v1::GetVmResponse* response) {
  if (auto fail = Begin(context, "GetVm")) return *fail;
  std::string tenant = seen().back().tenant;
  absl::MutexLock l(&mu_);
  auto it = vms_.find(request->vm_id());
  if (it == vms_.end() || it->second.tenant_id() != tenant) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("vm ", request->vm_id(), " not found on node x"));
  }
  *response->mutable_vm() = it->second;
  return grpc::Status::OK;
}

grpc::Status FakeFleetService::ListVms(grpc::ServerContext* context, const ppn::fleet::v1::ListVmsRequest*,
                                       ppn::fleet::v1::ListVmsResponse* response) {
  if (auto fail = Begin(context, "ListVms")) return *fail;
  std::string tenant = seen().back().tenant;
  absl::MutexLock l(&mu_);
  for (const auto& [id, vm] : vms_) {
    if (vm.tenant_id() == tenant && vm.state() != ppn::types::v1::VM_STATE_DESTROYED) *response->add_vms() = vm;
  }
  return grpc::Status::OK;
}

grpc::Status FakeFleetService::DestroyVm(grpc::ServerContext* context, const ppn::fleet::v1::DestroyVmRequest* request,
                                         ppn::fleet::v1::DestroyVmResponse* response) {
  if (auto fail = Begin(context, "DestroyVm")) return *fail;
  std::string tenant = seen().back().tenant;
  absl::MutexLock l(&mu_);
  auto it = vms_.find(request->vm_id());
  if (it == vms_.end() || it->second.tenant_id() != tenant) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("vm ", request->vm_id(), " not found"));
  }
  it->second.set_state(ppn::types::v1::VM_STATE_DESTROYED);
  *response->mutable_vm() = it->second;
  ++version_;
  changed_.SignalAll();
  return grpc::Status::OK;
}

grpc::Status FakeFleetService::UpdateVmNetwork(grpc::ServerContext* context,
                                               const ppn::fleet::v1::UpdateVmNetworkRequest* request,
                                               ppn::fleet::v1::UpdateVmNetworkResponse* response) {
  if (auto fail = Begin(context, "UpdateVmNetwork")) return *fail;
  std::string tenant = seen().back().tenant;
  absl::MutexLock l(&mu_);
  auto it = vms_.find(request->vm_id());
  if (it == vms_.end() || it->second.tenant_id() != tenant) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("vm ", request->vm_id(), " not found on node x"));
  }
  *it->second.mutable_spec()->mutable_egress() = request->egress();
  *response->mutable_vm() = it->second;
  ++version_;
  changed_.SignalAll();
  return grpc::Status::OK;
}

grpc::Status FakeFleetService::WatchVm(grpc::ServerContext* context, const ppn::fleet::v1::WatchVmRequest* request,
                                       grpc::ServerWriter<ppn::fleet::v1::WatchVmResponse>* writer) {
  if (auto fail = Begin(context, "WatchVm")) return *fail;
  std::string tenant = seen().back().tenant;
  absl::MutexLock l(&mu_);
  ++open_watches_;
  struct Closing {
    FakeFleetService* f;
    ~Closing() ABSL_EXCLUSIVE_LOCKS_REQUIRED(f->mu_) { --f->open_watches_; }
  } closing{this};
  uint64_t seen_version = ~uint64_t{0};
  for (;;) {
    auto it = vms_.find(request->vm_id());
    if (it == vms_.end() || it->second.tenant_id() != tenant) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("vm ", request->vm_id(), " not found"));
    }
    if (seen_version != version_) {
      seen_version = version_;
      ppn::fleet::v1::WatchVmResponse m;
      *m.mutable_vm() = it->second;
      mu_.Unlock();
      bool written = writer->Write(m);
      mu_.Lock();
      if (!written) break;
      if (m.vm().state() == ppn::types::v1::VM_STATE_DESTROYED) return grpc::Status::OK;
    }
    if (context->IsCancelled()) break;
    changed_.WaitWithTimeout(&mu_, absl::Milliseconds(20));
  }
  ++cancelled_watches_;
  return grpc::Status::CANCELLED;
}

InProcessFleet StartInProcess(FakeFleetService* service) {
  grpc::ServerBuilder builder;
  builder.RegisterService(service);
  InProcessFleet fleet;
  fleet.server = builder.BuildAndStart();
  fleet.channel = fleet.server->InProcessChannel(grpc::ChannelArguments());
  return fleet;
}

absl::StatusOr<StartedServer> StartMeshFleet(const std::string& mesh, const TlsFiles& tls, FakeFleetService* service) {
  RolePolicy policy(mesh);
  policy.AllowService("ppn.fleet.v1.FleetService", {ppn::roles::kTenantProxy});
  return StartMeshServer("127.0.0.1:0", tls, std::move(policy), {service});
}

}  // namespace ppn::proxy::testing
