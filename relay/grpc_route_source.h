#pragma once

// GrpcRouteSource: WatchRelayRoutes on the fleet over mTLS, as the relay role.

#include <memory>
#include <string>

#include "common/tls_credentials.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "relay/route_source.h"

namespace ppn::relay {

class GrpcRouteSource final : public RouteSource {
 public:
  // `fleet`: host:port of the fleet.
  GrpcRouteSource(const std::string& fleet, const TlsFiles& tls);
  std::unique_ptr<RouteStream> Watch() override;

 private:
  std::unique_ptr<ppn::fleet::v1::FleetService::Stub> stub_;
};

}  // namespace ppn::relay
