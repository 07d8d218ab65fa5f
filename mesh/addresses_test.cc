#include "mesh/addresses.h"

#include "catch2/catch.hpp"

namespace ppn::mesh {
namespace {

TEST_CASE("addresses, prefixes and endpoints are parsed strictly", "[mesh][addresses]") {
  CHECK(ParseIpv4("10.8.0.1") == std::optional<uint32_t>(0x0a080001));
  CHECK(!ParseIpv4("10.8.0").has_value());
  CHECK(!ParseIpv4("10.8.0.256").has_value());
  CHECK(!ParseIpv4("10.8.0.01").has_value());
  CHECK(!ParseIpv4("10.8.0.+1").has_value());
  CHECK(ParseIpv4Prefix("10.8.0.0/24")->ToString() == "10.8.0.0/24");
  CHECK(!ParseIpv4Prefix("10.8.0.1/24").ok());
  CHECK(!ParseIpv4Prefix("10.8.0.0/33").ok());
  CHECK(!ParseIpv4Prefix("10.8.0.0").ok());
  CHECK(IsValidEndpoint("203.0.113.7:51820"));
  CHECK(IsValidEndpoint("cloud.example.org:51820"));
  CHECK(IsValidEndpoint("[2001:db8::1]:51820"));
  CHECK(!IsValidEndpoint("203.0.113.7:0"));
  CHECK(!IsValidEndpoint("203.0.113.7:65536"));
  CHECK(!IsValidEndpoint(":51820"));
  CHECK(!IsValidEndpoint("host name:51820"));
  CHECK(!IsValidEndpoint("2001:db8::1:51820"));
}

}  // namespace
}  // namespace ppn::mesh
