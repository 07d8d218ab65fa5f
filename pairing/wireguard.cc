#include "pairing/wireguard.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppn::pairing {

absl::StatusOr<WireGuardKeys> NewWireGuardKeys() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  if (key == nullptr) return absl::InternalError("X25519 key generation failed");
  unsigned char priv[32], pub[32];
  size_t plen = 32, publen = 32;
  bool ok = EVP_PKEY_get_raw_private_key(key, priv, &plen) == 1 && EVP_PKEY_get_raw_public_key(key, pub, &publen) == 1;
  EVP_PKEY_free(key);
  if (!ok) return absl::InternalError("X25519 key export failed");
  return WireGuardKeys{absl::Base64Escape(std::string(reinterpret_cast<char*>(priv), 32)),
                       absl::Base64Escape(std::string(reinterpret_cast<char*>(pub), 32))};
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
