// The relay's data path over real loopback sockets: connections and datagrams reach the
// route's backend, follow a re-pointed route, end with a route that goes, and stay within the
// limits and timeouts a hostile client meets.

#include "relay/forwarder.h"

#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "relay/testing/test_servers.h"
#include "tests/fakes/fake_clock.h"

namespace ppn::relay {
namespace {

using testing::Connect;
using testing::ReadLine;
using testing::ReadsEof;
using testing::SendAll;
using testing::TcpServer;

Route Tcp(int port, int backend, const std::string& vm = "vm-1") {
  return {Transport::kTcp, static_cast<uint16_t>(port), vm, backend == 0 ? "" : "127.0.0.1",
          static_cast<uint16_t>(backend)};
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(5)) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

struct Rig {
  explicit Rig(ForwarderOptions options = {}) {
    options.bind_address = "127.0.0.1";
    forwarder = *Forwarder::Create(options, &clock);
    forwarder->Start();
  }
  ~Rig() { forwarder->Stop(); }
  std::optional<PortStats> Port(int port, Transport t = Transport::kTcp) {
    for (const PortStats& s : forwarder->Stats()) {
      if (s.port == port && s.transport == t) return s;
    }
    return std::nullopt;
  }
  // Sets the routes and waits until the loop serves them.
  void Route(std::vector<relay::Route> routes) {
    forwarder->SetRoutes(routes);
    REQUIRE(WaitFor([&] {
      for (const relay::Route& r : routes) {
        auto s = Port(r.public_port, r.transport);
        if (!s || !s->bound || s->backend != BackendName(r)) return false;
      }
      return forwarder->Stats().size() == routes.size();
    }));
  }
  int Connections(int port) {
    auto s = Port(port);
    return s ? s->connections : -1;
  }

  ppn::testing::FakeClock clock;
  std::unique_ptr<Forwarder> forwarder;
};

TEST_CASE("a connection to a relay port reaches its backend both ways and half-closes pass through",
          "[relay][forwarder]") {
  TcpServer a("node-a", TcpServer::Mode::kGreetAndEcho);
  Rig rig;
  int port = testing::FreePort();
  rig.Route({Tcp(port, a.port())});

  int fd = Connect(port);
  REQUIRE(fd >= 0);
  CHECK(ReadLine(fd) == "node-a\n");
  SendAll(fd, "hello\n");
  CHECK(ReadLine(fd) == "hello\n");

  // 4 MiB each way through 16 KiB buffers: backpressure holds, nothing is lost or reordered.
  std::string big;
  for (int i = 0; big.size() < (4 << 20); ++i) absl::StrAppend(&big, i, ",");
  std::thread writer([&] {
    SendAll(fd, big);
    shutdown(fd, SHUT_WR);  // the backend sees EOF through the relay and closes
  });
  std::string echoed;
  CHECK(ReadsEof(fd, &echoed));
  writer.join();
  CHECK(echoed.size() == big.size());
  CHECK(echoed == big);
  close(fd);
  CHECK(WaitFor([&] { return rig.Connections(port) == 0; }));
  CHECK(rig.Port(port)->accepted == 1);
}

TEST_CASE("a re-pointed route sends new connections to the new backend at once and closes the old ones",
          "[relay][forwarder][migration]") {
  TcpServer a("node-a", TcpServer::Mode::kGreetAndEcho), b("node-b", TcpServer::Mode::kGreetAndEcho);
  Rig rig;
  int port = testing::FreePort();
  rig.Route({Tcp(port, a.port())});
  int old = Connect(port);
  REQUIRE(ReadLine(old) == "node-a\n");

  absl::Time sent = absl::Now();
  rig.forwarder->SetRoutes({Tcp(port, b.port())});
  REQUIRE(WaitFor([&] { return rig.Port(port)->backend == absl::StrCat("127.0.0.1:", b.port()); }));
  CHECK(absl::Now() - sent < absl::Milliseconds(100));  // the loop is woken, it does not poll
  CHECK(ReadsEof(old));                                 // it led to the copy that no longer runs
  close(old);
  int fresh = Connect(port);
  CHECK(ReadLine(fresh) == "node-b\n");
  close(fresh);
}

TEST_CASE("a port whose VM is gone is closed with its connections", "[relay][forwarder]") {
  TcpServer a("node-a", TcpServer::Mode::kGreetAndEcho);
  Rig rig;
  int gone = testing::FreePort(), kept = testing::FreePort();
  rig.Route({Tcp(gone, a.port(), "vm-gone"), Tcp(kept, a.port(), "vm-kept")});
  int open = Connect(gone);
  REQUIRE(ReadLine(open) == "node-a\n");
  rig.Route({Tcp(kept, a.port(), "vm-kept")});
  CHECK(ReadsEof(open));
  close(open);
  CHECK(Connect(gone) == -1);  // refused: nothing listens there any more
  CHECK(errno == ECONNREFUSED);
  int other = Connect(kept);
  CHECK(ReadLine(other) == "node-a\n");
  close(other);
}

TEST_CASE("a port without a backend resets every connection", "[relay][forwarder]") {
  Rig rig;
  int port = testing::FreePort();
  rig.Route({Tcp(port, 0)});  // the VM is pending, failed or lost
  int fd = Connect(port);
  REQUIRE(fd >= 0);
  CHECK(ReadsEof(fd));
  close(fd);
  CHECK(WaitFor([&] { return rig.Port(port)->refused == 1; }));
  CHECK(rig.Port(port)->accepted == 0);
}

TEST_CASE("a backend that refuses resets its client", "[relay][forwarder]") {
  Rig rig;
  int port = testing::FreePort();
  rig.Route({Tcp(port, testing::FreePort())});  // nothing listens at the node's port
  int fd = Connect(port);
  REQUIRE(fd >= 0);
  CHECK(ReadsEof(fd));
  close(fd);
  CHECK(WaitFor([&] { return rig.forwarder->OpenConnections() == 0; }));
}

TEST_CASE("connection limits hold per port per source and in all and free up when a client goes",
          "[relay][forwarder][limits]") {
  TcpServer a("node-a", TcpServer::Mode::kGreetAndEcho);
  ForwarderOptions options;
  int p1 = testing::FreePort(), p2 = testing::FreePort();
  std::vector<int> open;
  auto connect_ok = [&](int port) {
    int fd = Connect(port);
    if (fd < 0) return false;
    if (ReadLine(fd) != "node-a\n") {
      close(fd);
      return false;
    }
    open.push_back(fd);
    return true;
  };

  SECTION("per port") {
    options.max_connections_per_port = 2;
    Rig rig(options);
    rig.Route({Tcp(p1, a.port(), "vm-1"), Tcp(p2, a.port(), "vm-2")});
    CHECK(connect_ok(p1));
    CHECK(connect_ok(p1));
    CHECK_FALSE(connect_ok(p1));  // reset before the backend is ever asked
    CHECK(connect_ok(p2));        // another VM's port is not touched
    CHECK(rig.Port(p1)->refused == 1);
    close(open[0]);
    CHECK(WaitFor([&] { return rig.Connections(p1) == 1; }));
    CHECK(connect_ok(p1));
  }
  SECTION("per source, over every port") {
    options.max_connections_per_source = 3;
    Rig rig(options);
    rig.Route({Tcp(p1, a.port(), "vm-1"), Tcp(p2, a.port(), "vm-2")});
    CHECK(connect_ok(p1));
    CHECK(connect_ok(p2));
    CHECK(connect_ok(p2));
    CHECK_FALSE(connect_ok(p1));
    CHECK_FALSE(connect_ok(p2));
  }
  SECTION("in all") {
    options.max_connections = 2;
    Rig rig(options);
    rig.Route({Tcp(p1, a.port(), "vm-1"), Tcp(p2, a.port(), "vm-2")});
    CHECK(connect_ok(p1));
    CHECK(connect_ok(p2));
    CHECK_FALSE(connect_ok(p1));
    CHECK_FALSE(connect_ok(p2));
    CHECK(WaitFor([&] { return rig.forwarder->OpenConnections() == 2 && rig.Port(p2)->refused == 1; }));
  }
  for (int fd : open) close(fd);
}

TEST_CASE("an idle connection is closed after the idle timeout and an active one is not",
          "[relay][forwarder][limits]") {
  TcpServer a("node-a", TcpServer::Mode::kGreetAndEcho);
  ForwarderOptions options;
  options.idle_timeout = absl::Minutes(5);
  Rig rig(options);
  int port = testing::FreePort();
  rig.Route({Tcp(port, a.port())});
  int idle = Connect(port), busy = Connect(port);
  REQUIRE(ReadLine(idle) == "node-a\n");
  REQUIRE(ReadLine(busy) == "node-a\n");
  rig.clock.Advance(absl::Minutes(3));
  SendAll(busy, "still here\n");
  REQUIRE(ReadLine(busy) == "still here\n");
  rig.clock.Advance(absl::Minutes(3));  // idle for 6 minutes, busy for 3
  CHECK(ReadsEof(idle));
  CHECK(WaitFor([&] { return rig.Connections(port) == 1; }));
  SendAll(busy, "and here\n");
  CHECK(ReadLine(busy) == "and here\n");
  close(idle);
  close(busy);
}

TEST_CASE("a backend that never completes the handshake is given up after the connect timeout",
          "[relay][forwarder][limits]") {
  // A listener that never accepts, its queue filled: the relay's SYN goes unanswered.
  int stuck_port = 0;
  int stuck = testing::Listener(0, &stuck_port);
  std::vector<int> fillers;
  for (int i = 0; i < 2; ++i) fillers.push_back(Connect(stuck_port, absl::Milliseconds(200)));

  ForwarderOptions options;
  options.connect_timeout = absl::Seconds(5);
  Rig rig(options);
  int port = testing::FreePort();
  rig.Route({Tcp(port, stuck_port)});
  int fd = Connect(port, absl::Milliseconds(300));
  REQUIRE(fd >= 0);
  CHECK_FALSE(ReadsEof(fd));  // still waiting for the node
  CHECK(rig.Connections(port) == 1);
  rig.clock.Advance(absl::Seconds(6));
  CHECK(WaitFor([&] { return rig.Connections(port) == 0; }));
  CHECK(ReadsEof(fd));
  close(fd);
  for (int f : fillers) close(f);
  close(stuck);
}

TEST_CASE("a port already in use is retried until it is free", "[relay][forwarder]") {
  TcpServer a("node-a", TcpServer::Mode::kGreetAndEcho);
  int squatter_port = 0;
  int squatter = testing::Listener(1, &squatter_port);

  Rig rig;
  rig.forwarder->SetRoutes({Tcp(squatter_port, a.port())});
  REQUIRE(WaitFor([&] { return rig.Port(squatter_port).has_value(); }));
  CHECK_FALSE(rig.Port(squatter_port)->bound);
  CHECK(rig.Port(squatter_port)->error.find("Address already in use") != std::string::npos);
  close(squatter);
  rig.clock.Advance(absl::Seconds(6));
  CHECK(WaitFor([&] { return rig.Port(squatter_port)->bound; }));
  int fd = Connect(squatter_port);
  CHECK(ReadLine(fd) == "node-a\n");
  close(fd);
}

TEST_CASE("UDP datagrams reach the backend and replies return to their sender across a re-point",
          "[relay][forwarder][udp]") {
  testing::UdpServer a("node-a"), b("node-b");
  ForwarderOptions options;
  options.max_udp_sessions_per_port = 2;
  options.udp_idle_timeout = absl::Seconds(60);
  Rig rig(options);
  int port = testing::FreePort();
  Route route{Transport::kUdp, static_cast<uint16_t>(port), "vm-1", "127.0.0.1", static_cast<uint16_t>(a.port())};
  rig.Route({route});
  int c1 = testing::UdpSocket(), c2 = testing::UdpSocket(), c3 = testing::UdpSocket();
  CHECK(testing::UdpAsk(c1, port, "ping") == "node-a:ping");
  CHECK(testing::UdpAsk(c2, port, "pong") == "node-a:pong");
  CHECK(testing::UdpAsk(c1, port, "again") == "node-a:again");
  // A third peer finds the port's sessions taken: its datagram is dropped.
  CHECK(testing::UdpAsk(c3, port, "late", absl::Milliseconds(200)).empty());
  CHECK(WaitFor([&] { return rig.Port(port, Transport::kUdp)->refused == 1; }));

  route.backend_port = static_cast<uint16_t>(b.port());
  rig.Route({route});
  CHECK(rig.Port(port, Transport::kUdp)->connections == 0);  // sessions to the old node dropped
  CHECK(testing::UdpAsk(c1, port, "moved") == "node-b:moved");

  rig.clock.Advance(absl::Seconds(61));
  CHECK(WaitFor([&] { return rig.Port(port, Transport::kUdp)->connections == 0; }));
  CHECK(testing::UdpAsk(c3, port, "now") == "node-b:now");
  close(c1);
  close(c2);
  close(c3);
}

TEST_CASE("one client's UDP sessions are capped and UDP never uses up the TCP budget", "[relay][forwarder][udp]") {
  testing::UdpServer a("node-a");
  TcpServer web("node-a", TcpServer::Mode::kGreetAndEcho);
  ForwarderOptions options;
  options.max_connections = 2;  // TCP's budget
  options.max_udp_sessions_per_source = 3;
  Rig rig(options);
  int udp = testing::FreePort(), tcp = testing::FreePort();
  rig.Route({{Transport::kUdp, static_cast<uint16_t>(udp), "vm-1", "127.0.0.1", static_cast<uint16_t>(a.port())},
             {Transport::kTcp, static_cast<uint16_t>(tcp), "vm-1", "127.0.0.1", static_cast<uint16_t>(web.port())}});
  // A flood from one address, one session per source port: only the first three get through.
  std::vector<int> sockets;
  int answered = 0;
  for (int i = 0; i < 10; ++i) {
    sockets.push_back(testing::UdpSocket());
    answered += !testing::UdpAsk(sockets.back(), udp, "x", absl::Milliseconds(150)).empty();
  }
  CHECK(answered == 3);
  // TCP clients are still served: the datagrams did not take their connections.
  int fd = Connect(tcp);
  CHECK(ReadLine(fd) == "node-a\n");
  close(fd);
  for (int s : sockets) close(s);
}

TEST_CASE("bad options are refused", "[relay][forwarder]") {
  ppn::testing::FakeClock clock;
  ForwarderOptions options;
  options.bind_address = "relay.example.org";
  CHECK(Forwarder::Create(options, &clock).status().message() ==
        "bind address \"relay.example.org\" is not a numeric IPv4 or IPv6 address");
  options.bind_address = "127.0.0.1";
  options.max_connections_per_port = 0;
  CHECK(Forwarder::Create(options, &clock).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ppn::relay
