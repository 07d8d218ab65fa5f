#include "relay/route.h"

#include <arpa/inet.h>

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ppn::relay {
namespace {

bool NumericAddress(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

std::string PortName(Transport transport, uint16_t port) {
  return absl::StrCat(transport == Transport::kUdp ? "udp/" : "tcp/", port);
}

std::string BackendName(const Route& route) {
  if (!route.has_backend()) return "none";
  if (route.backend_host.find(':') != std::string::npos) {
    return absl::StrCat("[", route.backend_host, "]:", route.backend_port);
  }
  return absl::StrCat(route.backend_host, ":", route.backend_port);
}

RouteTable RoutesFrom(const ppn::fleet::v1::WatchRelayRoutesResponse& table, uint16_t first_port, uint16_t last_port) {
  RouteTable out;
  std::set<std::pair<Transport, uint16_t>> seen;
  for (const ppn::fleet::v1::RelayRoute& r : table.routes()) {
    std::string name = absl::StrCat(r.protocol() == ppn::types::v1::PROTOCOL_UDP ? "udp/" : "tcp/", r.public_port());
    auto refuse = [&](absl::string_view why) { out.problems.push_back(absl::StrCat(name, ": ", why)); };
    if (r.protocol() != ppn::types::v1::PROTOCOL_TCP && r.protocol() != ppn::types::v1::PROTOCOL_UDP) {
      refuse(absl::StrCat("protocol ", static_cast<int>(r.protocol()), " is not TCP or UDP"));
      continue;
    }
    if (r.public_port() < first_port || r.public_port() > last_port) {
      refuse(absl::StrCat("outside the relay's ports ", first_port, "-", last_port));
      continue;
    }
    if (r.vm_id().empty() || r.vm_id().size() > 64) {
      refuse("no vm_id");
      continue;
    }
    Route route;
    route.transport = r.protocol() == ppn::types::v1::PROTOCOL_UDP ? Transport::kUdp : Transport::kTcp;
    route.public_port = static_cast<uint16_t>(r.public_port());
    route.vm_id = r.vm_id();
    if (!r.backend_address().empty() || r.backend_port() != 0) {
      if (!NumericAddress(r.backend_address()) || r.backend_port() < 1 || r.backend_port() > 65535) {
        refuse(absl::StrCat("backend \"", r.backend_address().substr(0, 64), "\" port ", r.backend_port(),
                            " is not a numeric address and a port 1-65535"));
        continue;
      }
      route.backend_host = r.backend_address();
      route.backend_port = static_cast<uint16_t>(r.backend_port());
    }
    if (!seen.insert({route.transport, route.public_port}).second) {
      refuse("listed twice");
      continue;
    }
    out.routes.push_back(std::move(route));
  }
  return out;
}

}  // namespace ppn::relay
