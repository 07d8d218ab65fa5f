#include "tools/ppnctl/egress.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

TEST_CASE("an egress rule reads as CIDR port range and protocol and prints back the same", "[ppnctl][egress]") {
  struct Row {
    std::string text;
    std::string cidr;
    uint32_t first, last;
    ppn::types::v1::Protocol protocol;
  };
  for (const Row& row : std::vector<Row>{
           {"203.0.113.0/24", "203.0.113.0/24", 0, 0, ppn::types::v1::PROTOCOL_UNSPECIFIED},
           {"198.51.100.7:443", "198.51.100.7", 443, 0, ppn::types::v1::PROTOCOL_UNSPECIFIED},
           {"10.1.0.0/16:5000-5100/udp", "10.1.0.0/16", 5000, 5100, ppn::types::v1::PROTOCOL_UDP},
           {"10.1.0.0/16:53/UDP", "10.1.0.0/16", 53, 0, ppn::types::v1::PROTOCOL_UDP},
           {"10.1.0.0/16:80/tcp", "10.1.0.0/16", 80, 0, ppn::types::v1::PROTOCOL_TCP},
       }) {
    INFO(row.text);
    auto rule = ParseEgressRule(row.text);
    REQUIRE(rule.ok());
    CHECK(rule->cidr() == row.cidr);
    CHECK(rule->port_first() == row.first);
    CHECK(rule->port_last() == row.last);
    CHECK(rule->protocol() == row.protocol);
  }
  CHECK(FormatEgressRule(*ParseEgressRule("10.1.0.0/16:5000-5100/udp")) == "10.1.0.0/16:5000-5100/udp");
  CHECK(FormatEgressRule(*ParseEgressRule("198.51.100.7:443/tcp")) == "198.51.100.7:443");
  CHECK(FormatEgressRule(*ParseEgressRule("203.0.113.0/24")) == "203.0.113.0/24");
}

TEST_CASE("a malformed egress flag says what is wrong and how to write it", "[ppnctl][egress]") {
  struct Row {
    std::string text;
    std::string message;
  };
  const std::string syntax = "; want CIDR[:PORT[-PORT]][/udp], e.g. 203.0.113.0/24:443";
  for (const Row& row : std::vector<Row>{
           {":443", "\":443\" names no address" + syntax},
           {"10.0.0.1/udp", "\"10.0.0.1/udp\" has a protocol but no port" + syntax},
           {"10.0.0.1:0", "\"10.0.0.1:0\" has a port that is not 1-65535" + syntax},
           {"10.0.0.1:http", "\"10.0.0.1:http\" has a port that is not 1-65535" + syntax},
           {"10.0.0.1:80-", "\"10.0.0.1:80-\" has a port that is not 1-65535" + syntax},
           {"10.0.0.1:90-80", "\"10.0.0.1:90-80\" has a port range that runs backwards" + syntax},
           {"10.0.0.0/33", "egress.allow rule \"10.0.0.0/33\" is not an IPv4 address or CIDR" + syntax},
           {"example.com:443", "egress.allow rule \"example.com\" is not an IPv4 address or CIDR" + syntax},
       }) {
    INFO(row.text);
    absl::StatusOr<std::string> v = AllowFlagValue(row.text);
    CHECK(v.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(v.status().message() == row.message);
  }
  CHECK(DenyFlagValue("10.0.0.0/33").status().message() ==
        "egress.deny rule \"10.0.0.0/33\" is not an IPv4 address or CIDR" + syntax);
  CHECK(*AllowFlagValue("10.1.0.0/16:5000-5100/udp") ==
        "{\"cidr\":\"10.1.0.0/16\",\"port_first\":5000,\"port_last\":5100,\"protocol\":\"PROTOCOL_UDP\"}");
  CHECK(*InternetFlagValue("deny") == "INTERNET_ACCESS_DENIED");
  CHECK(*InternetFlagValue("Allow") == "INTERNET_ACCESS_ALLOWED");
  CHECK(InternetFlagValue("maybe").status().message() == "\"maybe\": want allow or deny");
}

TEST_CASE("a VM's policy and traffic read as one line each", "[ppnctl][egress]") {
  ppn::tenancy::v1::Vm vm;
  CHECK(DescribeNetwork(vm) ==
        "egress: internet as the tenant's default; no rate limit\n"
        "traffic: sent 0 bytes (0 packets), received 0 bytes (0 packets)\n");
  auto* egress = vm.mutable_spec()->mutable_egress();
  egress->set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  *egress->add_allow() = *ParseEgressRule("203.0.113.0/24:443");
  *egress->add_allow() = *ParseEgressRule("198.51.100.7:5000-5100/udp");
  *egress->add_deny() = *ParseEgressRule("203.0.113.66");
  egress->set_rate_limit_kbit(5000);
  vm.mutable_network()->set_tx_bytes(4096);
  vm.mutable_network()->set_tx_packets(3);
  vm.mutable_network()->set_rx_bytes(1);
  vm.mutable_network()->set_rx_packets(1);
  CHECK(DescribeNetwork(vm) ==
        "egress: internet denied; allow 203.0.113.0/24:443, 198.51.100.7:5000-5100/udp; deny 203.0.113.66; rate "
        "limit 5000 kbit/s\n"
        "traffic: sent 4096 bytes (3 packets), received 1 byte (1 packet)\n");
}

}  // namespace
}  // namespace ppn::ppnctl
