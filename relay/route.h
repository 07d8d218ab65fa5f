#pragma once

// A relay route: one stable tenant endpoint (a protocol and a port of the relay) and the node
// address that reaches the VM behind it now, checked before the relay binds or connects
// anything. Pure C++ (the fleet's protos as data).

#include <cstdint>
#include <string>
#include <vector>

#include "ppn/fleet/v1/fleet_service.pb.h"

namespace ppn::relay {

enum class Transport { kTcp, kUdp };

struct Route {
  Transport transport = Transport::kTcp;
  uint16_t public_port = 0;
  std::string vm_id;
  // A numeric IPv4 or IPv6 address; empty while nothing serves the VM's port (the relay
  // refuses connections then).
  std::string backend_host;
  uint16_t backend_port = 0;
  bool has_backend() const { return !backend_host.empty(); }
  bool operator==(const Route& o) const {
    return transport == o.transport && public_port == o.public_port && vm_id == o.vm_id &&
           backend_host == o.backend_host && backend_port == o.backend_port;
  }
  bool operator!=(const Route& o) const { return !(*this == o); }
};

// "tcp/30000".
std::string PortName(Transport transport, uint16_t port);
// "10.8.0.3:20001", "[fd00::3]:20001", or "none".
std::string BackendName(const Route& route);

// The routes of a fleet table the relay serves, and why each other one was left out.
struct RouteTable {
  std::vector<Route> routes;
  std::vector<std::string> problems;
};

// Checks every route of `table`: a port within [first_port, last_port] (the relay's range),
// TCP or UDP, each protocol and port once, a vm_id, and a backend that is empty or a numeric
// address with a port. What fails is left out, with a problem that says why.
RouteTable RoutesFrom(const ppn::fleet::v1::WatchRelayRoutesResponse& table, uint16_t first_port, uint16_t last_port);

}  // namespace ppn::relay
