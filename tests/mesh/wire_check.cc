#include "tests/mesh/wire_check.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace ppn::testing {
namespace {

constexpr size_t kMaxDescribed = 20;

uint32_t Le32(const unsigned char* p) { return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24; }
uint32_t Be32(const unsigned char* p) { return static_cast<uint32_t>(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
uint16_t Be16(const unsigned char* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

std::string Ip(const unsigned char* p) { return absl::StrCat(p[0], ".", p[1], ".", p[2], ".", p[3]); }

// A WireGuard message as the protocol defines them: type 1-4, three zero bytes, the type's
// size `n`. Reads only the first four bytes of `p`.
bool IsWireGuardMessage(const unsigned char* p, size_t n) {
  if (n < 4 || p[1] != 0 || p[2] != 0 || p[3] != 0) return false;
  switch (p[0]) {
    case 1: return n == 148;  // handshake initiation
    case 2: return n == 92;   // handshake response
    case 3:
      return n == 64;  // cookie reply
    // Transport data: a 16-byte header, the payload padded to 16 bytes (or to the MTU when
    // that is less) and a 16-byte tag.
    case 4: return n >= 32;
    default: return false;
  }
}

}  // namespace

absl::StatusOr<WireReport> CheckWire(const std::string& pcap_path, const std::set<std::string>& node_addresses,
                                     uint16_t wireguard_port) {
  std::ifstream in(pcap_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no capture at ", pcap_path));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* d = reinterpret_cast<const unsigned char*>(data.data());
  if (data.size() < 24) return absl::InvalidArgumentError("the capture has no pcap header");
  uint32_t magic = Le32(d);
  bool swapped = false;
  if (magic == 0xa1b2c3d4 || magic == 0xa1b23c4d) {
    swapped = false;
  } else if (magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1) {
    swapped = true;
  } else {
    return absl::InvalidArgumentError("the capture is not a pcap file");
  }
  auto u32 = [&](const unsigned char* p) { return swapped ? Be32(p) : Le32(p); };
  if (u32(d + 20) != 1) return absl::InvalidArgumentError("the capture is not of Ethernet frames");
  WireReport r;
  auto violation = [&](std::string what) {
    ++r.violations;
    if (r.first.size() < kMaxDescribed) r.first.push_back(std::move(what));
  };
  size_t at = 24;
  while (at + 16 <= data.size()) {
    uint32_t caplen = u32(d + at + 8);
    const unsigned char* f = d + at + 16;
    at += 16 + caplen;
    if (at > data.size()) break;  // the capture was cut mid-frame
    ++r.frames;
    if (caplen < 14) continue;
    size_t l3 = 14;
    uint16_t type = Be16(f + 12);
    if (type == 0x8100 && caplen >= 18) {  // a VLAN tag
      type = Be16(f + 16);
      l3 = 18;
    }
    if (type == 0x86dd) {
      if (caplen >= l3 + 40 && f[l3 + 24] != 0xff) violation("IPv6 unicast");
      continue;
    }
    if (type != 0x0800 || caplen < l3 + 20) continue;  // ARP and the like carry nothing of ours
    const unsigned char* ip = f + l3;
    std::string src = Ip(ip + 12), dst = Ip(ip + 16);
    if (node_addresses.count(src) == 0 || node_addresses.count(dst) == 0) continue;
    ++r.between_nodes;
    size_t ihl = (ip[0] & 0x0f) * 4;
    uint16_t total = Be16(ip + 2);
    uint8_t proto = ip[9];
    bool fragment = (Be16(ip + 6) & 0x3fff) != 0;  // more fragments, or an offset
    const char* name = proto == 6 ? "TCP" : proto == 17 ? "UDP" : proto == 1 ? "ICMP" : "IP";
    if (fragment) {
      violation(absl::StrCat("fragment ", name, " ", src, " > ", dst));
      continue;
    }
    if (caplen < l3 + ihl + 8) {
      violation(absl::StrCat(name, " ", src, " > ", dst, " (cut short)"));
      continue;
    }
    const unsigned char* l4 = ip + ihl;
    uint16_t sport = Be16(l4), dport = Be16(l4 + 2);
    if (proto == 17 && sport == wireguard_port && dport == wireguard_port) {
      // The header is judged from the bytes captured, the size from the IP length: the
      // capture may keep only the start of each packet.
      size_t message = total >= ihl + 8 ? total - ihl - 8 : 0;
      size_t have = std::min(message, static_cast<size_t>(caplen - l3 - ihl - 8));
      if (have >= 4 && IsWireGuardMessage(l4 + 8, message)) {
        ++r.wireguard;
        r.wireguard_bytes += total;
        continue;
      }
      violation(absl::StrCat("UDP ", src, ":", sport, " > ", dst, ":", dport, " that is not a WireGuard message"));
      continue;
    }
    if (proto == 6 || proto == 17) {
      violation(absl::StrCat(name, " ", src, ":", sport, " > ", dst, ":", dport));
    } else {
      violation(absl::StrCat(name, " ", src, " > ", dst, " (protocol ", proto, ")"));
    }
  }
  return r;
}

}  // namespace ppn::testing
