// relay: the founding node's stable tenant endpoints. Flags → forwarder → route follower
// (the fleet's WatchRelayRoutes) → health server → SIGTERM → shutdown.

#include <sys/resource.h>

#include <algorithm>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/service_flags.h"
#include "fleet/relay_ports.h"
#include "relay/forwarder.h"
#include "relay/grpc_route_source.h"
#include "relay/relay_server.h"
#include "relay/route_follower.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, fleet, "127.0.0.1:7102", "The fleet's address (mTLS, as the relay role)");
ABSL_FLAG(std::string, bind_address, "0.0.0.0", "Where the tenant ports listen (numeric IPv4 or IPv6)");
ABSL_FLAG(std::string, relay_ports, "",
          "The tenant ports this relay may serve, FIRST-LAST (the fleet's --relay_ports); routes outside are "
          "refused. Empty: any port the fleet names");
ABSL_FLAG(int, max_connections, 1024, "Open TCP connections in all");
ABSL_FLAG(int, max_connections_per_port, 128, "Open TCP connections per tenant port");
ABSL_FLAG(int, max_connections_per_source, 32, "Open TCP connections per client address, over every port");
ABSL_FLAG(int, max_udp_sessions_per_port, 128, "UDP peers per tenant port");
ABSL_FLAG(int, max_udp_sessions, 1024, "UDP peers in all (a budget of their own: datagrams cannot use up TCP's)");
ABSL_FLAG(int, max_udp_sessions_per_source, 8, "UDP peers per client address (any port), over every tenant port");
ABSL_FLAG(absl::Duration, idle_timeout, absl::Minutes(5), "A TCP connection idle this long is closed");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(5), "Time to reach a VM's node before the client is reset");
ABSL_FLAG(absl::Duration, udp_idle_timeout, absl::Seconds(60), "A UDP peer silent this long loses its session");
ABSL_FLAG(int, buffer_kib, 16, "KiB buffered per direction of a TCP connection");

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("relay", argc, argv);
  ppn::relay::RouteFollower::Options follow;
  if (!absl::GetFlag(FLAGS_relay_ports).empty()) {
    absl::StatusOr<std::pair<uint32_t, uint32_t>> range = ppn::fleet::ParsePortRange(absl::GetFlag(FLAGS_relay_ports));
    if (!range.ok()) ppn::ExitWithError(absl::StrCat("--relay_ports: ", range.status().message()));
    follow.first_port = static_cast<uint16_t>(range->first);
    follow.last_port = static_cast<uint16_t>(range->second);
  }
  ppn::relay::ForwarderOptions options;
  options.bind_address = absl::GetFlag(FLAGS_bind_address);
  options.max_connections = absl::GetFlag(FLAGS_max_connections);
  options.max_connections_per_port = absl::GetFlag(FLAGS_max_connections_per_port);
  options.max_connections_per_source = absl::GetFlag(FLAGS_max_connections_per_source);
  options.max_udp_sessions_per_port = absl::GetFlag(FLAGS_max_udp_sessions_per_port);
  options.max_udp_sessions = absl::GetFlag(FLAGS_max_udp_sessions);
  options.max_udp_sessions_per_source = absl::GetFlag(FLAGS_max_udp_sessions_per_source);
  // Two descriptors per TCP connection and one per UDP session, beyond the default soft limit.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  options.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  options.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  options.udp_idle_timeout = absl::GetFlag(FLAGS_udp_idle_timeout);
  options.buffer_bytes = static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_buffer_kib))) * 1024;
  absl::StatusOr<std::unique_ptr<ppn::relay::Forwarder>> forwarder =
      ppn::relay::Forwarder::Create(options, ppn::RealClock::Get());
  if (!forwarder.ok()) ppn::ExitWithError(forwarder.status().message());
  (*forwarder)->Start();
  ppn::relay::GrpcRouteSource fleet(absl::GetFlag(FLAGS_fleet), flags.tls);
  ppn::relay::Forwarder* f = forwarder->get();
  ppn::relay::RouteFollower follower(
      &fleet, [f](std::vector<ppn::relay::Route> routes) { f->SetRoutes(std::move(routes)); }, follow);
  follower.Start();
  absl::StatusOr<ppn::StartedServer> server = ppn::relay::StartRelayServer(flags.mesh, flags.listen, flags.tls);
  if (!server.ok()) ppn::ExitWithError(server.status().message());
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) ppn::ExitWithError(port.message());
  spdlog::info("relay.started port={} fleet={} bind={} ports={}-{}", server->port, absl::GetFlag(FLAGS_fleet),
               options.bind_address, follow.first_port, follow.last_port);
  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("relay.stopping signal={}", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  follower.Stop();
  (*forwarder)->Stop();
  return 0;
}
