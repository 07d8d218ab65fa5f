#pragma once

// IPv4 addresses and prefixes of the mesh and WireGuard endpoints, parsed strictly (no
// leading zeros, no host bits in a prefix). Pure; thread-safe.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn::mesh {

// An IPv4 network, e.g. 10.8.0.0/24.
struct Ipv4Prefix {
  uint32_t network = 0;  // host byte order, host bits zero
  int length = 0;
  bool Contains(uint32_t address) const;
  uint32_t Broadcast() const;
  std::string ToString() const;
};

// "a.b.c.d" in host byte order; nullopt if it is not a dotted quad.
std::optional<uint32_t> ParseIpv4(absl::string_view text);
std::string FormatIpv4(uint32_t address);
// "a.b.c.d/n" with no host bits set. INVALID_ARGUMENT otherwise.
absl::StatusOr<Ipv4Prefix> ParseIpv4Prefix(absl::string_view text);
// "host:port" with a DNS name, an IPv4 literal or a bracketed IPv6 literal, port 1-65535.
bool IsValidEndpoint(absl::string_view endpoint);

}  // namespace ppn::mesh
