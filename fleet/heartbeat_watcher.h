#pragma once

// HeartbeatWatcher keeps one WatchHeartbeats stream open to every registered node, feeding
// FleetCore, reconnecting with backoff when a stream breaks. It also runs FleetCore's
// periodic pass (liveness, TTL). Start/Stop; threads only call into FleetCore.

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "fleet/fleet_core.h"
#include "fleet/grpc_agent_client.h"

namespace ppn::fleet {

class HeartbeatWatcher {
 public:
  HeartbeatWatcher(FleetCore* core, GrpcAgentClientFactory* channels, absl::Duration interval)
      : core_(core), channels_(channels), interval_(interval) {}
  ~HeartbeatWatcher() { Stop(); }

  void Start();
  // Cancels every stream and joins the threads.
  void Stop();

 private:
  void WatchNode(const std::string& node_id, const std::string& address);
  void Loop();

  FleetCore* const core_;
  GrpcAgentClientFactory* const channels_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::thread> watchers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, grpc::ClientContext*> contexts_ ABSL_GUARDED_BY(mu_);
  std::thread loop_;
};

}  // namespace ppn::fleet
