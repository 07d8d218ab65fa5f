#pragma once

// RouteFollower keeps the relay on the fleet's route table: it holds one WatchRelayRoutes
// stream open, hands every table (checked by RoutesFrom) to its sink at once, and reopens the
// stream when it ends, with backoff. While the fleet is away the last table stays in force,
// so tenant endpoints outlive a fleet restart. Start/Stop; the thread only calls RunOnce.
// Thread-safe. `*source` must outlive it.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "relay/route.h"
#include "relay/route_source.h"

namespace ppn::relay {

class RouteFollower {
 public:
  using Sink = std::function<void(std::vector<Route>)>;
  struct Options {
    // The relay's ports: a route outside them is refused.
    uint16_t first_port = 1;
    uint16_t last_port = 65535;
    absl::Duration min_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(1);
  };

  RouteFollower(RouteSource* source, Sink sink, Options options);
  ~RouteFollower();

  // Opens one stream and follows it to its end; returns how it ended (CANCELLED after Stop).
  // `*tables` (if given) counts the tables it applied.
  absl::Status RunOnce(int* tables = nullptr);
  void Start();
  // Ends the stream in progress and joins the thread.
  void Stop();
  // Tables applied so far.
  uint64_t tables();

 private:
  RouteSource* const source_;
  const Sink sink_;
  const Options options_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  RouteStream* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t tables_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);  // the last table's, logged when they change
  absl::CondVar stop_cv_;
  std::thread thread_;
};

}  // namespace ppn::relay
