#include "relay/route.h"

#include "catch2/catch.hpp"

namespace ppn::relay {
namespace {

ppn::fleet::v1::RelayRoute Wire(uint32_t port, const std::string& backend, uint32_t backend_port,
                                ppn::types::v1::Protocol protocol = ppn::types::v1::PROTOCOL_TCP) {
  ppn::fleet::v1::RelayRoute r;
  r.set_public_port(port);
  r.set_protocol(protocol);
  r.set_vm_id("vm-1");
  r.set_backend_address(backend);
  r.set_backend_port(backend_port);
  return r;
}

TEST_CASE("the fleet's routes become the relay's and what it must not serve is left out with a reason",
          "[relay][route]") {
  ppn::fleet::v1::WatchRelayRoutesResponse table;
  *table.add_routes() = Wire(30000, "10.8.0.3", 20001);
  *table.add_routes() = Wire(30001, "fd00::3", 20002, ppn::types::v1::PROTOCOL_UDP);
  *table.add_routes() = Wire(30002, "", 0);  // nothing serves it now
  *table.add_routes() = Wire(22, "10.8.0.3", 22);
  *table.add_routes() = Wire(30003, "node-a.example.org", 20003);
  *table.add_routes() = Wire(30004, "10.8.0.3", 0);
  *table.add_routes() = Wire(30005, "10.8.0.3", 20005, ppn::types::v1::PROTOCOL_UNSPECIFIED);
  *table.add_routes() = Wire(30000, "10.8.0.4", 20009);
  auto nameless = Wire(30006, "10.8.0.3", 20006);
  nameless.clear_vm_id();
  *table.add_routes() = nameless;

  RouteTable t = RoutesFrom(table, 30000, 30099);
  REQUIRE(t.routes.size() == 3);
  CHECK(t.routes[0] == Route{Transport::kTcp, 30000, "vm-1", "10.8.0.3", 20001});
  CHECK(t.routes[1] == Route{Transport::kUdp, 30001, "vm-1", "fd00::3", 20002});
  CHECK(t.routes[2] == Route{Transport::kTcp, 30002, "vm-1", "", 0});
  CHECK(BackendName(t.routes[1]) == "[fd00::3]:20002");
  CHECK(BackendName(t.routes[2]) == "none");
  CHECK(t.problems == std::vector<std::string>{
                          "tcp/22: outside the relay's ports 30000-30099",
                          "tcp/30003: backend \"node-a.example.org\" port 20003 is not a numeric address and a port "
                          "1-65535",
                          "tcp/30004: backend \"10.8.0.3\" port 0 is not a numeric address and a port 1-65535",
                          "tcp/30005: protocol 0 is not TCP or UDP",
                          "tcp/30000: listed twice",
                          "tcp/30006: no vm_id",
                      });
}

}  // namespace
}  // namespace ppn::relay
