#pragma once

// gRPC adapter of the fleet: caller identity → Scope, protos → FleetCore, statuses out.
// The tenant comes only from the `x-ppn-tenant-id` metadata of a `tenant-proxy` peer.

#include "common/call_metadata.h"
#include "fleet/fleet_core.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"

namespace ppn::fleet {

class FleetService final
    : public ppn::fleet::v1::FleetService::WithCallbackMethod_WatchVm<ppn::fleet::v1::FleetService::Service> {
 public:
  // `*core` must outlive this object; destroy this object only after the server has shut down.
  explicit FleetService(FleetCore* core) : core_(core) {}

  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest*, v1::CreateVmResponse*) override;
  grpc::Status GetVm(grpc::ServerContext*, const v1::GetVmRequest*, v1::GetVmResponse*) override;
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest*, v1::ListVmsResponse*) override;
  grpc::Status DestroyVm(grpc::ServerContext*, const v1::DestroyVmRequest*, v1::DestroyVmResponse*) override;
  grpc::Status WatchVm(grpc::ServerContext*, const v1::WatchVmRequest*,
                       grpc::ServerWriter<v1::WatchVmResponse>*) override;
  grpc::Status ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*, v1::ListNodesResponse*) override;
  grpc::Status ExplainPlacement(grpc::ServerContext*, const v1::ExplainPlacementRequest*,
                                v1::ExplainPlacementResponse*) override;
  grpc::Status RecordMigration(grpc::ServerContext*, const v1::RecordMigrationRequest*,
                               v1::RecordMigrationResponse*) override;
  grpc::Status SetPin(grpc::ServerContext*, const v1::SetPinRequest*, v1::SetPinResponse*) override;

 private:
  FleetCore* const core_;
};

}  // namespace ppn::fleet
