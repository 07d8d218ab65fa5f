// RouteFollower against a fake fleet stream: every table reaches the forwarder at once, a
// refused route is left out, and a stream that ends (a fleet restart) leaves the last table in
// force until a new one comes.

#include "relay/route_follower.h"

#include <thread>

#include "catch2/catch.hpp"
#include "relay/testing/fake_route_source.h"

namespace ppn::relay {
namespace {

ppn::fleet::v1::WatchRelayRoutesResponse Table(std::vector<std::pair<uint32_t, uint32_t>> routes) {
  ppn::fleet::v1::WatchRelayRoutesResponse t;
  for (const auto& [port, backend] : routes) {
    auto* r = t.add_routes();
    r->set_public_port(port);
    r->set_protocol(ppn::types::v1::PROTOCOL_TCP);
    r->set_vm_id("vm-1");
    r->set_backend_address("127.0.0.1");
    r->set_backend_port(backend);
  }
  return t;
}

struct Sink {
  absl::Mutex mu;
  std::vector<std::vector<Route>> tables;
  RouteFollower::Sink Fn() {
    return [this](std::vector<Route> routes) {
      absl::MutexLock l(&mu);
      tables.push_back(std::move(routes));
    };
  }
  size_t size() {
    absl::MutexLock l(&mu);
    return tables.size();
  }
};

TEST_CASE("every table of the stream reaches the forwarder and a route outside the range does not",
          "[relay][follower]") {
  testing::FakeRouteSource source;
  Sink sink;
  RouteFollower follower(&source, sink.Fn(), {30000, 30099});
  source.Push(Table({{30000, 20001}}));
  source.Push(Table({{30000, 20002}, {22, 22}}));
  source.End(absl::UnavailableError("fleet restarting"));
  int tables = 0;
  absl::Status ended = follower.RunOnce(&tables);
  CHECK(ended.code() == absl::StatusCode::kUnavailable);
  CHECK(tables == 2);
  REQUIRE(sink.tables.size() == 2);
  CHECK(sink.tables[0] == std::vector<Route>{{Transport::kTcp, 30000, "vm-1", "127.0.0.1", 20001}});
  CHECK(sink.tables[1] == std::vector<Route>{{Transport::kTcp, 30000, "vm-1", "127.0.0.1", 20002}});
}

TEST_CASE("a stream that ends leaves the last table in force and the follower reconnects", "[relay][follower]") {
  testing::FakeRouteSource source;
  Sink sink;
  RouteFollower follower(&source, sink.Fn(), {30000, 30099, absl::Milliseconds(1), absl::Milliseconds(10)});
  source.Push(Table({{30000, 20001}}));
  source.End(absl::UnavailableError("fleet restarting"));
  follower.Start();
  // The stream ended and was opened again: nothing was sent to take the routes down.
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (source.watches() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  CHECK(source.watches() == 2);
  CHECK(sink.size() == 1);
  source.Push(Table({{30000, 20002}}));
  while (sink.size() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  REQUIRE(sink.size() == 2);
  follower.Stop();  // ends the open stream's Read
}

TEST_CASE("stopping the follower ends a stream that waits for a table", "[relay][follower]") {
  testing::FakeRouteSource source;
  Sink sink;
  RouteFollower follower(&source, sink.Fn(), {});
  follower.Start();
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (source.watches() < 1 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  follower.Stop();
  CHECK(source.watches() == 1);
  CHECK(sink.size() == 0);
}

}  // namespace
}  // namespace ppn::relay
