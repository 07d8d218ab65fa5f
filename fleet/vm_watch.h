#pragma once

// WatchHub serves the fleet's WatchVm and WatchRelayRoutes streams without a thread per
// stream: each stream is a gRPC callback reactor, and the hub's one thread waits for the
// registry's change notification (FleetCore::WaitForChange) and wakes every open stream, which
// sends its next message if there is one (at most one write in flight; a change during a
// write is sent after it). A VM's stream sends its record when it changed, traffic counters
// aside, and ends OK after sending DESTROYED, with NOT_FOUND when the VM is not (or no longer)
// visible to the caller. A relay's stream sends the whole route table when a route changed,
// and ends FAILED_PRECONDITION when the fleet has no relay. Every stream ends CANCELLED when
// its caller goes. Thread-safe. `*core` must outlive it; destroy it only after the server has
// shut down (every stream has ended).

#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "fleet/fleet_core.h"
#include "grpcpp/support/server_callback.h"
#include "ppn/fleet/v1/fleet_service.pb.h"

namespace ppn::fleet {

class WatchHub {
 public:
  explicit WatchHub(FleetCore* core);
  ~WatchHub();

  // A new stream of `vm_id` for a caller with `scope`; gRPC owns the reactor until its OnDone.
  grpc::ServerWriteReactor<v1::WatchVmResponse>* Watch(Scope scope, std::string vm_id);
  // A new stream of the relay's route table; gRPC owns the reactor until its OnDone.
  grpc::ServerWriteReactor<v1::WatchRelayRoutesResponse>* WatchRelayRoutes();
  // Streams open now.
  size_t size();

 private:
  class Stream;
  template <typename Msg>
  class StreamOf;
  class VmWatch;
  class RelayWatch;
  void Loop();
  void Add(Stream* watch);
  void Remove(Stream* watch);

  FleetCore* const core_;
  absl::Mutex mu_;  // held while waking, so a stream is never woken after its OnDone
  std::set<Stream*> watches_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ppn::fleet
