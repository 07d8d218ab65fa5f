#pragma once

// How `ppnctl node list` prints the pool: one line per node with its WireGuard tunnel (mesh
// address, up/down/none, the age of its latest handshake), then every problem and warning the
// nodes report; `-o wide` adds the tunnel's backend and one line per peer of each node. Pure.

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "ppn/fleet/v1/fleet_service.pb.h"

namespace ppn::ppnctl {

// "up", "down", or "none" (the node runs without a tunnel: the one-machine mesh).
std::string TunnelState(const ppn::fleet::v1::Node& node);

// "4s ago", "3m ago", "2h ago", "never" (peers, no handshake yet), "-" (no tunnel or no peers):
// the latest handshake of any of the node's peers, seen from `now`.
std::string LastHandshake(const ppn::fleet::v1::Node& node, absl::Time now);

// Rows as columns two spaces apart (the first row is the header); every table of ppnctl's.
std::string Table(const std::vector<std::vector<std::string>>& rows);

std::string RenderNodes(const ppn::fleet::v1::ListNodesResponse& nodes, absl::Time now, bool wide);

}  // namespace ppn::ppnctl
