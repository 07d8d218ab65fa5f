#include "tests/mesh/wire_check.h"

#include <fstream>

#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn::testing {
namespace {

// A capture built frame by frame, as tcpdump -w writes it (microsecond pcap, Ethernet).
class Pcap {
 public:
  Pcap() {
    Le32(0xa1b2c3d4);
    Le16(2);
    Le16(4);
    Le32(0);
    Le32(0);
    Le32(65535);
    Le32(1);
  }
  // An IPv4 packet from a to b (last octets of 10.0.0.x) of `proto` with ports and payload;
  // only `snap` bytes of the frame are kept.
  void Ip4(int a, int b, uint8_t proto, uint16_t sport, uint16_t dport, const std::string& payload, size_t snap = 65535,
           uint16_t flags_fragment = 0) {
    std::string f(12, '\x02');
    f += std::string("\x08\x00", 2);
    size_t l4 = proto == 6 ? 20 : 8;
    uint16_t total = static_cast<uint16_t>(20 + l4 + payload.size());
    f += std::string("\x45\x00", 2);
    f += Be16(total) + std::string(2, '\0') + Be16(flags_fragment) + std::string(1, 64) + std::string(1, proto);
    f += std::string(2, '\0') + std::string("\x0a\x00\x00", 3) + std::string(1, a) + std::string("\x0a\x00\x00", 3) +
         std::string(1, b);
    f += Be16(sport) + Be16(dport) + std::string(l4 - 4, '\0') + payload;
    Frame(f.substr(0, std::min(f.size(), snap)), f.size());
  }
  void Ip6Unicast() {
    std::string f(12, '\x02');
    f += "\x86\xdd";
    f += std::string(24, '\0') + std::string(1, '\xfe') + std::string(15, '\0');
    Frame(f, f.size());
  }
  void Arp() {
    std::string f(12, '\x02');
    f += "\x08\x06" + std::string(28, '\0');
    Frame(f, f.size());
  }
  std::string Write(const TempDir& dir) {
    std::string path = dir.File("capture.pcap");
    std::ofstream(path, std::ios::binary) << data_;
    return path;
  }

 private:
  static std::string Be16(uint16_t v) { return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }
  void Le16(uint16_t v) { data_ += std::string{static_cast<char>(v & 0xff), static_cast<char>(v >> 8)}; }
  void Le32(uint32_t v) {
    for (int i = 0; i < 4; ++i) data_ += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void Frame(const std::string& f, size_t original) {
    Le32(1795000000);
    Le32(0);
    Le32(static_cast<uint32_t>(f.size()));
    Le32(static_cast<uint32_t>(original));
    data_ += f;
  }
  std::string data_;
};

std::string Message(uint8_t type, size_t size) {
  std::string m(size, '\x5a');
  m[0] = static_cast<char>(type);
  m[1] = m[2] = m[3] = '\0';
  return m;
}

const std::set<std::string> kNodes = {"10.0.0.10", "10.0.0.11", "10.0.0.12"};

TEST_CASE("WireGuard messages between the nodes' WireGuard ports pass, cut short or not", "[wire]") {
  TempDir dir;
  Pcap p;
  p.Ip4(11, 10, 17, 51820, 51820, Message(1, 148));
  p.Ip4(10, 11, 17, 51820, 51820, Message(2, 92));
  p.Ip4(10, 12, 17, 51820, 51820, Message(4, 32 + 1408), 14 + 20 + 8 + 16);  // tcpdump -s 58
  p.Ip4(12, 11, 17, 51820, 51820, Message(4, 32 + 1420));                    // padded to an MTU of 1420
  p.Ip4(12, 10, 17, 51820, 51820, Message(3, 64));
  p.Arp();
  p.Ip4(11, 99, 6, 40000, 7100, "to a tenant, not a node");  // not between nodes: not judged here
  absl::StatusOr<WireReport> r = CheckWire(p.Write(dir), kNodes, 51820);
  REQUIRE(r.ok());
  CHECK(r->frames == 7);
  CHECK(r->between_nodes == 5);
  CHECK(r->wireguard == 5);
  CHECK(r->violations == 0);
  CHECK(r->wireguard_bytes == (148 + 92 + 1440 + 1452 + 64) + 5 * 28);
}

TEST_CASE("TCP, other UDP, fake WireGuard, fragments and IPv6 unicast between nodes are violations", "[wire]") {
  TempDir dir;
  Pcap p;
  p.Ip4(10, 11, 6, 41000, 7110, "POST /ppn.host.v1.HostAgent/WatchHeartbeats");
  p.Ip4(11, 12, 17, 51820, 20001, "a migration stream");
  p.Ip4(11, 12, 17, 51820, 51820, "cleartext on the WireGuard port");
  p.Ip4(11, 12, 17, 51820, 51820, Message(4, 31));                  // shorter than a header and a tag
  p.Ip4(11, 12, 17, 51820, 51820, Message(1, 148), 65535, 0x2000);  // more fragments follow
  p.Ip4(11, 12, 1, 0, 0, "ping");
  p.Ip6Unicast();
  absl::StatusOr<WireReport> r = CheckWire(p.Write(dir), kNodes, 51820);
  REQUIRE(r.ok());
  CHECK(r->wireguard == 0);
  CHECK(r->violations == 7);
  REQUIRE(r->first.size() == 7);
  CHECK(r->first[0] == "TCP 10.0.0.10:41000 > 10.0.0.11:7110");
  CHECK(r->first[1] == "UDP 10.0.0.11:51820 > 10.0.0.12:20001");
  CHECK(r->first[2] == "UDP 10.0.0.11:51820 > 10.0.0.12:51820 that is not a WireGuard message");
  CHECK(r->first[4] == "fragment UDP 10.0.0.11 > 10.0.0.12");
  CHECK(r->first[5] == "ICMP 10.0.0.11 > 10.0.0.12 (protocol 1)");
  CHECK(r->first[6] == "IPv6 unicast");
}

TEST_CASE("a file that is not a capture of Ethernet frames is refused", "[wire]") {
  TempDir dir;
  std::ofstream(dir.File("x"), std::ios::binary) << std::string(40, 'x');
  CHECK(CheckWire(dir.File("x"), kNodes, 51820).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(CheckWire(dir.File("absent"), kNodes, 51820).status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ppn::testing
