#include "host_agent/host_agent_service.h"

#include "common/grpc_status.h"
#include "common/ids.h"
#include "common/rpc_log.h"
#include "common/vm_spec.h"
#include "spdlog/spdlog.h"

namespace ppn::host {

grpc::Status HostAgentService::SpawnVm(grpc::ServerContext*, const v1::SpawnVmRequest* request,
                                       v1::SpawnVmResponse* response) {
  absl::StatusOr<v1::VmInstance> vm =
      manager_->Spawn(VmId(request->vm_id()), TenantId(request->tenant_id()), request->spec(), request->private_nics());
  if (!vm.ok()) return RpcFailed("SpawnVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::DestroyVm(grpc::ServerContext*, const v1::DestroyVmRequest* request,
                                         v1::DestroyVmResponse* response) {
  absl::Duration grace = absl::ZeroDuration();
  absl::Status valid = ToAbslDuration(request->grace_period(), "grace_period", &grace);
  if (!valid.ok()) return RpcFailed("DestroyVm", valid, {{"vm", request->vm_id()}});
  absl::StatusOr<v1::VmInstance> vm = manager_->Destroy(request->vm_id(), grace);
  if (!vm.ok()) return RpcFailed("DestroyVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::ListVms(grpc::ServerContext*, const v1::ListVmsRequest*, v1::ListVmsResponse* response) {
  for (auto& vm : manager_->List()) *response->add_vms() = std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::WatchHeartbeats(grpc::ServerContext* context, const v1::WatchHeartbeatsRequest* request,
                                               grpc::ServerWriter<v1::Heartbeat>* writer) {
  absl::Duration interval = default_interval_;
  if (request->has_interval()) {
    absl::Status valid = ToAbslDuration(request->interval(), "interval", &interval);
    if (valid.ok() && interval < absl::Milliseconds(100)) {
      valid = absl::InvalidArgumentError("interval must be at least 100 ms");
    }
    if (!valid.ok()) return RpcFailed("WatchHeartbeats", valid);
  }
  while (!context->IsCancelled()) {
    const uint64_t version = manager_->version();  // before: a change while it is made sends another
    v1::Heartbeat hb = manager_->MakeHeartbeat();
    *hb.mutable_interval() = ToProtoDuration(interval);
    if (!writer->Write(hb)) break;
    // The next one at the interval, or as soon as a VM changes (a guest became ready, a VM
    // stopped), so the fleet follows transitions without waiting for the interval; in short
    // steps so a cancelled stream frees its thread promptly.
    absl::Time next = absl::Now() + interval;
    while (absl::Now() < next && !context->IsCancelled()) {
      if (manager_->WaitForChange(version, std::min(absl::Milliseconds(100), next - absl::Now())) != version) break;
    }
  }
  return grpc::Status::OK;
}

grpc::Status HostAgentService::PrepareIncoming(grpc::ServerContext*, const v1::PrepareIncomingRequest* request,
                                               v1::PrepareIncomingResponse* response) {
  absl::StatusOr<v1::PrepareIncomingResponse> r = manager_->PrepareIncoming(*request);
  if (!r.ok()) return RpcFailed("PrepareIncoming", r.status(), {{"vm", request->vm_id()}});
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::MigrateOut(grpc::ServerContext* context, const v1::MigrateOutRequest* request,
                                          grpc::ServerWriter<v1::MigrateOutResponse>* writer) {
  absl::StatusOr<ppn::types::v1::MigrationProgress> final_report =
      manager_->MigrateOut(*request, [&](const ppn::types::v1::MigrationProgress& p) {
        v1::MigrateOutResponse msg;
        *msg.mutable_progress() = p;
        return !context->IsCancelled() && writer->Write(msg);
      });
  if (!final_report.ok()) return RpcFailed("MigrateOut", final_report.status(), {{"vm", request->vm_id()}});
  v1::MigrateOutResponse msg;
  *msg.mutable_progress() = *final_report;
  writer->Write(msg);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::SetBalloon(grpc::ServerContext*, const v1::SetBalloonRequest* request,
                                          v1::SetBalloonResponse* response) {
  absl::StatusOr<uint64_t> actual = manager_->SetBalloon(request->vm_id(), request->target_mib());
  if (!actual.ok()) return RpcFailed("SetBalloon", actual.status(), {{"vm", request->vm_id()}});
  response->set_actual_mib(*actual);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::GetBalloon(grpc::ServerContext*, const v1::GetBalloonRequest* request,
                                          v1::GetBalloonResponse* response) {
  uint64_t memory = 0;
  absl::StatusOr<uint64_t> actual = manager_->GetBalloon(request->vm_id(), &memory);
  if (!actual.ok()) return RpcFailed("GetBalloon", actual.status(), {{"vm", request->vm_id()}});
  response->set_actual_mib(*actual);
  response->set_memory_mib(memory);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::ResizeVm(grpc::ServerContext*, const v1::ResizeVmRequest* request,
                                        v1::ResizeVmResponse* response) {
  absl::StatusOr<v1::VmInstance> vm = manager_->ResizeVm(request->vm_id(), request->memory_mib());
  if (!vm.ok()) return RpcFailed("ResizeVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::ResumeVm(grpc::ServerContext*, const v1::ResumeVmRequest* request,
                                        v1::ResumeVmResponse* response) {
  absl::StatusOr<v1::VmInstance> vm = manager_->ResumeVm(request->vm_id());
  if (!vm.ok()) return RpcFailed("ResumeVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::UpdateVmNetwork(grpc::ServerContext*, const v1::UpdateVmNetworkRequest* request,
                                               v1::UpdateVmNetworkResponse* response) {
  absl::StatusOr<v1::VmInstance> vm = manager_->UpdateVmNetwork(request->vm_id(), request->egress());
  if (!vm.ok()) return RpcFailed("UpdateVmNetwork", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::SetNetworkPeers(grpc::ServerContext*, const v1::SetNetworkPeersRequest* request,
                                               v1::SetNetworkPeersResponse*) {
  absl::Status s = manager_->SetNetworkPeers(*request);
  if (!s.ok()) return RpcFailed("SetNetworkPeers", s, {{"network", request->network_id().substr(0, 64)}});
  return grpc::Status::OK;
}

grpc::Status HostAgentService::StopVm(grpc::ServerContext*, const v1::StopVmRequest* request,
                                      v1::StopVmResponse* response) {
  absl::Duration grace;
  absl::Status valid = ToGracePeriod(request->grace_period(), &grace);
  if (!valid.ok()) return RpcFailed("StopVm", valid, {{"vm", request->vm_id()}});
  absl::StatusOr<v1::VmInstance> vm = manager_->Stop(request->vm_id(), grace);
  if (!vm.ok()) return RpcFailed("StopVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::StartVm(grpc::ServerContext*, const v1::StartVmRequest* request,
                                       v1::StartVmResponse* response) {
  absl::StatusOr<v1::VmInstance> vm = manager_->StartStopped(request->vm_id());
  if (!vm.ok()) return RpcFailed("StartVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::RebootVm(grpc::ServerContext*, const v1::RebootVmRequest* request,
                                        v1::RebootVmResponse* response) {
  absl::Duration grace;
  absl::Status valid = ToGracePeriod(request->grace_period(), &grace);
  if (!valid.ok()) return RpcFailed("RebootVm", valid, {{"vm", request->vm_id()}});
  std::string how;
  absl::StatusOr<v1::VmInstance> vm = manager_->Reboot(request->vm_id(), grace, &how);
  if (!vm.ok()) return RpcFailed("RebootVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  response->set_how(how);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::GetConsoleOutput(grpc::ServerContext*, const v1::GetConsoleOutputRequest* request,
                                                v1::GetConsoleOutputResponse* response) {
  absl::StatusOr<size_t> max_bytes = ToConsoleReadBytes(request->max_bytes());
  if (!max_bytes.ok()) return RpcFailed("GetConsoleOutput", max_bytes.status(), {{"vm", request->vm_id()}});
  uint64_t next = 0;
  absl::StatusOr<std::string> data = manager_->ReadConsole(request->vm_id(), request->offset(), *max_bytes, &next);
  if (!data.ok()) return RpcFailed("GetConsoleOutput", data.status(), {{"vm", request->vm_id()}});
  response->set_data(*std::move(data));
  response->set_next_offset(next);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::StreamConsole(grpc::ServerContext* context, const v1::StreamConsoleRequest* request,
                                             grpc::ServerWriter<v1::StreamConsoleResponse>* writer) {
  uint64_t offset = request->offset();
  for (bool first = true; !context->IsCancelled(); first = false) {
    uint64_t next = offset;
    absl::StatusOr<std::string> data = manager_->ReadConsole(request->vm_id(), offset, size_t{64} << 10, &next);
    if (!data.ok()) {
      // The VM went (destroyed or moved away) after the stream began: the stream ends there.
      if (data.status().code() == absl::StatusCode::kNotFound && !first) break;
      return RpcFailed("StreamConsole", data.status(), {{"vm", request->vm_id()}});
    }
    if (!data->empty() || next != offset) {
      v1::StreamConsoleResponse msg;
      msg.set_data(*std::move(data));
      msg.set_next_offset(next);
      if (!writer->Write(msg)) break;
      offset = next;
      continue;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return grpc::Status::OK;
}

}  // namespace ppn::host
