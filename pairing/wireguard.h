#pragma once

// WireGuard keys (Curve25519, WireGuard's base64 form) and wg-quick configuration text.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ppn/pairing/v1/pairing_service.pb.h"

namespace ppn::pairing {

struct WireGuardKeys {
  std::string private_key;  // base64; SECRET, never leaves the node
  std::string public_key;   // base64
};

absl::StatusOr<WireGuardKeys> NewWireGuardKeys();

// wg-quick [Interface] with `address`/`prefix` and one [Peer] per record.
std::string WgQuickConfig(const WireGuardKeys& keys, const std::string& address, uint32_t prefix,
                          const std::vector<ppn::pairing::v1::WireGuardPeer>& peers, int listen_port);

}  // namespace ppn::pairing
