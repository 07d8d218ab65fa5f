#include "mesh/addresses.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ppn::mesh {
namespace {

bool IsDnsName(absl::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (absl::string_view label : absl::StrSplit(host, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!absl::ascii_isalnum(c) && c != '-') return false;
    }
  }
  return true;
}

bool IsIpv6Literal(absl::string_view host) {
  if (host.size() < 2 || host.find(':') == absl::string_view::npos) return false;
  for (char c : host) {
    if (!absl::ascii_isxdigit(c) && c != ':' && c != '.') return false;
  }
  return true;
}

}  // namespace

bool Ipv4Prefix::Contains(uint32_t address) const {
  uint32_t mask = length == 0 ? 0 : ~uint32_t{0} << (32 - length);
  return (address & mask) == network;
}

uint32_t Ipv4Prefix::Broadcast() const {
  if (length >= 32) return network;
  return network | (~uint32_t{0} >> length);
}

std::string Ipv4Prefix::ToString() const { return absl::StrCat(FormatIpv4(network), "/", length); }

std::optional<uint32_t> ParseIpv4(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 4) return std::nullopt;
  uint32_t out = 0;
  for (absl::string_view p : parts) {
    uint32_t octet = 0;
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(p, &octet) || octet > 255 || (p.size() > 1 && p[0] == '0')) {
      return std::nullopt;
    }
    out = out << 8 | octet;
  }
  return out;
}

std::string FormatIpv4(uint32_t a) {
  return absl::StrCat(a >> 24, ".", (a >> 16) & 255, ".", (a >> 8) & 255, ".", a & 255);
}

absl::StatusOr<Ipv4Prefix> ParseIpv4Prefix(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits('/', 1));
  int length = 0;
  std::optional<uint32_t> network = ParseIpv4(parts[0]);
  if (parts.size() != 2 || !network.has_value() || parts[1].empty() || parts[1].size() > 2 ||
      !std::all_of(parts[1].begin(), parts[1].end(), absl::ascii_isdigit) || !absl::SimpleAtoi(parts[1], &length) ||
      length > 32) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text.substr(0, 64), "\" is not an IPv4 prefix"));
  }
  Ipv4Prefix p{*network, length};
  if (!p.Contains(*network) || (length < 32 && (*network & (~uint32_t{0} >> length)) != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has host bits set"));
  }
  return p;
}

bool IsValidEndpoint(absl::string_view endpoint) {
  size_t colon = endpoint.rfind(':');
  if (colon == absl::string_view::npos) return false;
  absl::string_view host = endpoint.substr(0, colon), port = endpoint.substr(colon + 1);
  uint32_t port_number = 0;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(port, &port_number) || port_number == 0 || port_number > 65535) {
    return false;
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    return IsIpv6Literal(host.substr(1, host.size() - 2));
  return ParseIpv4(host).has_value() || IsDnsName(host);
}

}  // namespace ppn::mesh
