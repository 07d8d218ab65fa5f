#include "relay/route_follower.h"

#include <algorithm>

#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace ppn::relay {

RouteFollower::RouteFollower(RouteSource* source, Sink sink, Options options)
    : source_(source), sink_(std::move(sink)), options_(options) {}

RouteFollower::~RouteFollower() { Stop(); }

absl::Status RouteFollower::RunOnce(int* tables) {
  std::unique_ptr<RouteStream> stream = source_->Watch();
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return absl::CancelledError("the relay is stopping");
    current_ = stream.get();
  }
  ppn::fleet::v1::WatchRelayRoutesResponse table;
  bool first = true;
  while (stream->Read(&table)) {
    if (first) spdlog::info("relay.following routes={}", table.routes_size());
    first = false;
    RouteTable checked = RoutesFrom(table, options_.first_port, options_.last_port);
    {
      absl::MutexLock l(&mu_);
      if (checked.problems != problems_) {
        // A fleet that gives a route the relay must not serve is a bug or an attack: say so
        // once per table that changes them, not once per table.
        for (const std::string& p : checked.problems) spdlog::error("relay.route_refused {}", LogValue(p));
        problems_ = checked.problems;
      }
      ++tables_;
    }
    spdlog::debug("relay.table routes={} refused={}", checked.routes.size(), checked.problems.size());
    sink_(std::move(checked.routes));
    if (tables != nullptr) ++*tables;
  }
  {
    absl::MutexLock l(&mu_);
    current_ = nullptr;
  }
  return stream->Finish();
}

void RouteFollower::Start() {
  thread_ = std::thread([this] {
    absl::Duration backoff = options_.min_backoff;
    bool was_up = true;
    while (true) {
      int tables = 0;
      absl::Status ended = RunOnce(&tables);
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      if (tables > 0) {
        backoff = options_.min_backoff;
        was_up = true;
      }
      // Once per outage at warn; every retry of the same outage at debug.
      if (was_up) {
        spdlog::warn("relay.fleet_stream_ended code={} error={} retry_ms={} (the last table stays in force)",
                     absl::StatusCodeToString(ended.code()), LogValue(ended.message()),
                     absl::ToInt64Milliseconds(backoff));
      } else {
        spdlog::debug("relay.fleet_stream_ended code={} retry_ms={}", absl::StatusCodeToString(ended.code()),
                      absl::ToInt64Milliseconds(backoff));
      }
      was_up = false;
      stop_cv_.WaitWithTimeout(&mu_, backoff);
      if (stopping_) return;
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  });
}

void RouteFollower::Stop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    if (current_ != nullptr) current_->Cancel();
    stop_cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t RouteFollower::tables() {
  absl::MutexLock l(&mu_);
  return tables_;
}

}  // namespace ppn::relay
