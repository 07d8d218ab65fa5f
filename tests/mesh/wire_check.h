#pragma once

// What crossed a network between nodes, from a packet capture (pcap, Ethernet): every IPv4
// packet between two of the nodes' addresses must be a WireGuard message (UDP from and to the
// WireGuard port, a well-formed message header: handshake initiation, response, cookie reply
// or transport data) — no TCP, no other UDP, no fragment, no IPv6 unicast. Pure: reads the
// file, decides nothing about the network it came from.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ppn::testing {

struct WireReport {
  uint64_t frames = 0;             // every frame in the capture
  uint64_t between_nodes = 0;      // IPv4 packets whose source and destination are node addresses
  uint64_t wireguard = 0;          // of them, WireGuard messages
  uint64_t wireguard_bytes = 0;    // their IP length, summed
  uint64_t violations = 0;         // of them (and IPv6 unicast), anything else
  std::vector<std::string> first;  // the first violations, described ("TCP 10.0.0.2:7110 > 10.0.0.1:5555")
};

// INVALID_ARGUMENT for a file that is not a pcap of Ethernet frames; NOT_FOUND if absent.
absl::StatusOr<WireReport> CheckWire(const std::string& pcap_path, const std::set<std::string>& node_addresses,
                                     uint16_t wireguard_port);

}  // namespace ppn::testing
