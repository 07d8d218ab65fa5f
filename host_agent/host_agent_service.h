#pragma once

// gRPC adapter of the host agent: protos in, VmManager calls, statuses out.

#include "host_agent/vm_manager.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"

namespace ppn::host {

// Thread-safe. `*manager` must outlive the service.
class HostAgentService final : public ppn::host::v1::HostAgent::Service {
 public:
  HostAgentService(VmManager* manager, absl::Duration default_heartbeat_interval)
      : manager_(manager), default_interval_(default_heartbeat_interval) {}

  grpc::Status SpawnVm(grpc::ServerContext*, const v1::SpawnVmRequest*, v1::SpawnVmResponse*) override;
  grpc::Status DestroyVm(grpc::ServerContext*, const v1::DestroyVmRequest*, v1::DestroyVmResponse*) override;
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest*, v1::ListVmsResponse*) override;
  grpc::Status WatchHeartbeats(grpc::ServerContext*, const v1::WatchHeartbeatsRequest*,
                               grpc::ServerWriter<v1::Heartbeat>*) override;
  grpc::Status PrepareIncoming(grpc::ServerContext*, const v1::PrepareIncomingRequest*,
                               v1::PrepareIncomingResponse*) override;
  grpc::Status MigrateOut(grpc::ServerContext*, const v1::MigrateOutRequest*,
                          grpc::ServerWriter<v1::MigrateOutResponse>*) override;
  grpc::Status SetBalloon(grpc::ServerContext*, const v1::SetBalloonRequest*, v1::SetBalloonResponse*) override;
  grpc::Status GetBalloon(grpc::ServerContext*, const v1::GetBalloonRequest*, v1::GetBalloonResponse*) override;
  grpc::Status ResumeVm(grpc::ServerContext*, const v1::ResumeVmRequest*, v1::ResumeVmResponse*) override;
  grpc::Status ResizeVm(grpc::ServerContext*, const v1::ResizeVmRequest*, v1::ResizeVmResponse*) override;
  grpc::Status UpdateVmNetwork(grpc::ServerContext*, const v1::UpdateVmNetworkRequest*,
                               v1::UpdateVmNetworkResponse*) override;
  grpc::Status SetNetworkPeers(grpc::ServerContext*, const v1::SetNetworkPeersRequest*,
                               v1::SetNetworkPeersResponse*) override;
  grpc::Status StopVm(grpc::ServerContext*, const v1::StopVmRequest*, v1::StopVmResponse*) override;
  grpc::Status StartVm(grpc::ServerContext*, const v1::StartVmRequest*, v1::StartVmResponse*) override;
  grpc::Status RebootVm(grpc::ServerContext*, const v1::RebootVmRequest*, v1::RebootVmResponse*) override;
  grpc::Status GetConsoleOutput(grpc::ServerContext*, const v1::GetConsoleOutputRequest*,
                                v1::GetConsoleOutputResponse*) override;
  grpc::Status StreamConsole(grpc::ServerContext*, const v1::StreamConsoleRequest*,
                             grpc::ServerWriter<v1::StreamConsoleResponse>*) override;

 private:
  VmManager* const manager_;
  const absl::Duration default_interval_;
};

}  // namespace ppn::host
