#pragma once

// The relay's seam to the fleet: a stream of the fleet's route table (WatchRelayRoutes), each
// message the whole table. The gRPC implementation is grpc_route_source.h; tests use
// testing/fake_route_source.h.

#include <memory>

#include "absl/status/status.h"
#include "ppn/fleet/v1/fleet_service.pb.h"

namespace ppn::relay {

// One open stream. Read and Finish from one thread; Cancel from any.
class RouteStream {
 public:
  virtual ~RouteStream() = default;
  // Blocks for the next table; false once the stream has ended (Finish says why).
  virtual bool Read(ppn::fleet::v1::WatchRelayRoutesResponse* table) = 0;
  // How the stream ended; call once Read returned false.
  virtual absl::Status Finish() = 0;
  // Ends the stream: a Read in progress returns false.
  virtual void Cancel() = 0;
};

// Opens streams. Thread-safe.
class RouteSource {
 public:
  virtual ~RouteSource() = default;
  virtual std::unique_ptr<RouteStream> Watch() = 0;
};

}  // namespace ppn::relay
