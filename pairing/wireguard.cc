#include "pairing/wireguard.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mesh/wireguard_key.h"

namespace ppn::pairing {

absl::StatusOr<WireGuardKeys> NewWireGuardKeys() {
  absl::StatusOr<mesh::WireGuardKeyPair> pair = mesh::GenerateKeyPair();
  if (!pair.ok()) return pair.status();
  return WireGuardKeys{std::move(pair->private_key), std::move(pair->public_key)};
}

std::string WgQuickConfig(const WireGuardKeys& keys, const std::string& address, uint32_t prefix,
                          const std::vector<ppn::pairing::v1::WireGuardPeer>& peers, int listen_port) {
  std::string out = absl::StrCat("# Written by the PPN pairing ceremony.\n[Interface]\nPrivateKey = ", keys.private_key,
                                 "\nAddress = ", address, "/", prefix, "\n");
  if (listen_port > 0) absl::StrAppend(&out, "ListenPort = ", listen_port, "\n");
  for (const auto& p : peers) {
    absl::StrAppend(&out, "\n# ", p.node_name(), "\n[Peer]\nPublicKey = ", p.public_key(),
                    "\nAllowedIPs = ", absl::StrJoin(p.allowed_ips(), ", "), "\n");
    if (!p.endpoint().empty()) absl::StrAppend(&out, "Endpoint = ", p.endpoint(), "\nPersistentKeepalive = 25\n");
  }
  return out;
}

}  // namespace ppn::pairing
