#pragma once

// WatchHub serves the fleet's WatchVm streams without a thread per stream: each stream is a
// gRPC callback reactor, and the hub's one thread waits for the registry's change
// notification (FleetCore::WaitForChange) and wakes every open stream, which sends the VM's
// record if it changed, traffic counters aside (at most one write in flight; a change during a
// write is sent after it). A stream ends OK after sending STOPPED, with NOT_FOUND when the VM
// is not (or no longer) visible to the caller, CANCELLED when the caller goes. Thread-safe.
// `*core` must outlive it; destroy it only after the server has shut down (every stream has
// ended).

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
  // Streams open now.
  size_t size();

 private:
  class VmWatch;
  void Loop();
  void Remove(VmWatch* watch);

  FleetCore* const core_;
  absl::Mutex mu_;  // held while waking, so a stream is never woken after its OnDone
  std::set<VmWatch*> watches_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ppn::fleet
