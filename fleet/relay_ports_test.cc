#include "fleet/relay_ports.h"

#include "catch2/catch.hpp"

namespace ppn::fleet {
namespace {

TEST_CASE("relay ports are stored as text and read back and a bad entry is refused", "[fleet][relay]") {
  std::vector<RelayPort> ports = {{ppn::types::v1::PROTOCOL_TCP, 80, 30000}, {ppn::types::v1::PROTOCOL_UDP, 53, 30001}};
  CHECK(FormatRelayPorts(ports) == "tcp/80=30000,udp/53=30001");
  CHECK(*ParseRelayPorts("tcp/80=30000,udp/53=30001") == ports);
  CHECK(ParseRelayPorts("")->empty());
  for (const char* bad : {"tcp/80", "sctp/80=1", "tcp/0=30000", "tcp/80=70000", "tcp/80=3x", ",", "tcp/80=1,"}) {
    INFO(bad);
    CHECK(ParseRelayPorts(bad).status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a port range is FIRST-LAST within 1-65535", "[fleet][relay]") {
  CHECK(*ParsePortRange("30000-30299") == std::make_pair(30000u, 30299u));
  CHECK(*ParsePortRange("7-7") == std::make_pair(7u, 7u));
  for (const char* bad : {"", "30000", "30299-30000", "0-10", "1-65536", "a-b", "1-2-3"}) {
    INFO(bad);
    CHECK(ParsePortRange(bad).status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("the pool hands out each port once and a freed port last", "[fleet][relay]") {
  RelayPortPool pool;
  CHECK_FALSE(pool.Allocate("vm-a").has_value());  // no range: no relay
  pool.Configure(100, 102);
  CHECK(pool.available() == 3);
  CHECK(*pool.Allocate("vm-a") == 100);
  CHECK(*pool.Allocate("vm-b") == 101);
  pool.ReleaseExcept("vm-a", {});
  // 100 is free again, but 102 has never been handed out: it goes first.
  CHECK(*pool.Allocate("vm-c") == 102);
  CHECK(*pool.Allocate("vm-d") == 100);
  CHECK_FALSE(pool.Allocate("vm-e").has_value());
  CHECK(pool.available() == 0);

  CHECK(pool.Claim(101, "vm-b"));        // its own
  CHECK_FALSE(pool.Claim(101, "vm-x"));  // another's
  CHECK_FALSE(pool.Claim(99, "vm-x"));   // outside the range
  pool.ReleaseExcept("vm-b", {101});
  CHECK(pool.available() == 0);
  pool.ReleaseExcept("vm-b", {});
  CHECK(pool.Claim(101, "vm-x"));
}

}  // namespace
}  // namespace ppn::fleet
