#pragma once

// gRPC adapter of the fleet: caller identity → Scope, protos → FleetCore, statuses out.
// The tenant comes only from the `x-ppn-tenant-id` metadata of a `tenant-proxy` peer.
//
// WatchVm and WatchRelayRoutes are served with gRPC's callback API (a reactor per stream, one
// thread for all, see vm_watch.h) and every other method with the synchronous API: the
// generated WithCallbackMethod_<Method><Service> marks only that method as callback, so the
// unary methods keep their plain handlers and the server runs both kinds side by side.

#include "common/call_metadata.h"
#include "fleet/fleet_core.h"
#include "fleet/vm_watch.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"

namespace ppn::fleet {

class FleetService final
    : public ppn::fleet::v1::FleetService::WithCallbackMethod_WatchVm<
          ppn::fleet::v1::FleetService::WithCallbackMethod_WatchRelayRoutes<ppn::fleet::v1::FleetService::Service>> {
 public:
  // `*core` must outlive this object; destroy this object only after the server has shut down.
  explicit FleetService(FleetCore* core) : core_(core), watches_(core) {}

  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest*, v1::CreateVmResponse*) override;
  grpc::Status GetVm(grpc::ServerContext*, const v1::GetVmRequest*, v1::GetVmResponse*) override;
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest*, v1::ListVmsResponse*) override;
  grpc::Status DestroyVm(grpc::ServerContext*, const v1::DestroyVmRequest*, v1::DestroyVmResponse*) override;
  grpc::ServerWriteReactor<v1::WatchVmResponse>* WatchVm(grpc::CallbackServerContext*,
                                                         const v1::WatchVmRequest*) override;
  grpc::Status ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*, v1::ListNodesResponse*) override;
  grpc::Status ExplainPlacement(grpc::ServerContext*, const v1::ExplainPlacementRequest*,
                                v1::ExplainPlacementResponse*) override;
  grpc::Status RecordMigration(grpc::ServerContext*, const v1::RecordMigrationRequest*,
                               v1::RecordMigrationResponse*) override;
  grpc::Status SetPin(grpc::ServerContext*, const v1::SetPinRequest*, v1::SetPinResponse*) override;
  grpc::Status CordonNode(grpc::ServerContext*, const v1::CordonNodeRequest*, v1::CordonNodeResponse*) override;
  grpc::Status UncordonNode(grpc::ServerContext*, const v1::UncordonNodeRequest*, v1::UncordonNodeResponse*) override;
  grpc::Status UpdateVmNetwork(grpc::ServerContext*, const v1::UpdateVmNetworkRequest*,
                               v1::UpdateVmNetworkResponse*) override;
  grpc::Status CreateNetwork(grpc::ServerContext*, const v1::CreateNetworkRequest*,
                             v1::CreateNetworkResponse*) override;
  grpc::Status GetNetwork(grpc::ServerContext*, const v1::GetNetworkRequest*, v1::GetNetworkResponse*) override;
  grpc::Status ListNetworks(grpc::ServerContext*, const v1::ListNetworksRequest*, v1::ListNetworksResponse*) override;
  grpc::Status DeleteNetwork(grpc::ServerContext*, const v1::DeleteNetworkRequest*,
                             v1::DeleteNetworkResponse*) override;
  grpc::Status StopVm(grpc::ServerContext*, const v1::StopVmRequest*, v1::StopVmResponse*) override;
  grpc::Status StartVm(grpc::ServerContext*, const v1::StartVmRequest*, v1::StartVmResponse*) override;
  grpc::Status RebootVm(grpc::ServerContext*, const v1::RebootVmRequest*, v1::RebootVmResponse*) override;
  grpc::Status GetConsoleOutput(grpc::ServerContext*, const v1::GetConsoleOutputRequest*,
                                v1::GetConsoleOutputResponse*) override;
  // Synchronous: one thread per open stream (a console follower is a person at a terminal).
  grpc::Status StreamConsole(grpc::ServerContext*, const v1::StreamConsoleRequest*,
                             grpc::ServerWriter<v1::StreamConsoleResponse>*) override;
  grpc::ServerWriteReactor<v1::WatchRelayRoutesResponse>* WatchRelayRoutes(grpc::CallbackServerContext*,
                                                                           const v1::WatchRelayRoutesRequest*) override;

  // WatchVm and WatchRelayRoutes streams open now.
  size_t WatchesForTest() { return watches_.size(); }

 private:
  FleetCore* const core_;
  WatchHub watches_;
};

}  // namespace ppn::fleet
