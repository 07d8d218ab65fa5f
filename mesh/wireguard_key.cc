#include "mesh/wireguard_key.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace ppn::mesh {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The 32 raw bytes of a WireGuard key, or "" when `key` is not one.
std::string RawKey(absl::string_view key) {
  std::string raw;
  if (key.size() != 44 || !absl::Base64Unescape(key, &raw) || raw.size() != 32) return "";
  // Base64Unescape tolerates non-canonical padding bits; WireGuard's form is canonical.
  if (absl::Base64Escape(raw) != key) return "";
  return raw;
}

std::string PublicOf(EVP_PKEY* key) {
  unsigned char pub[32];
  size_t len = sizeof pub;
  if (EVP_PKEY_get_raw_public_key(key, pub, &len) != 1 || len != 32) return "";
  return absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(pub), len));
}

}  // namespace

bool IsWireGuardKey(absl::string_view key) { return !RawKey(key).empty(); }

absl::StatusOr<WireGuardKeyPair> GenerateKeyPair() {
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (key == nullptr) return absl::InternalError("X25519 key generation failed");
  unsigned char priv[32];
  size_t len = sizeof priv;
  if (EVP_PKEY_get_raw_private_key(key.get(), priv, &len) != 1 || len != 32) {
    return absl::InternalError("X25519 key export failed");
  }
  WireGuardKeyPair pair{absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(priv), len)), PublicOf(key.get())};
  OPENSSL_cleanse(priv, sizeof priv);
  if (pair.public_key.empty()) return absl::InternalError("X25519 key export failed");
  return pair;
}

absl::StatusOr<std::string> PublicKeyOf(absl::string_view private_key) {
  std::string raw = RawKey(private_key);
  if (raw.empty()) return absl::InvalidArgumentError("not a WireGuard key (44 characters of base64 for 32 bytes)");
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, reinterpret_cast<const unsigned char*>(raw.data()),
                                        raw.size()));
  OPENSSL_cleanse(raw.data(), raw.size());
  if (key == nullptr) return absl::InternalError("X25519 key import failed");
  std::string pub = PublicOf(key.get());
  if (pub.empty()) return absl::InternalError("X25519 public key derivation failed");
  return pub;
}

absl::StatusOr<WireGuardKeyPair> ReadPrivateKeyFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("WireGuard key file ", path, " does not exist"));
    return absl::FailedPreconditionError(absl::StrCat("WireGuard key file ", path, ": ", strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("WireGuard key file ", path, " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("WireGuard key file %s has mode %04o: group and others must have no access (chmod 600 %s)",
                        path, st.st_mode & 07777, path));
  }
  PPN_ASSIGN_OR_RETURN(std::string content, ReadFile(path));
  WireGuardKeyPair pair;
  pair.private_key = std::string(absl::StripAsciiWhitespace(content));
  OPENSSL_cleanse(content.data(), content.size());
  absl::StatusOr<std::string> pub = PublicKeyOf(pair.private_key);
  if (!pub.ok()) {
    OPENSSL_cleanse(pair.private_key.data(), pair.private_key.size());
    return absl::InvalidArgumentError(absl::StrCat("WireGuard key file ", path,
                                                   " does not hold a WireGuard private key (one line of 44 "
                                                   "characters of base64, as `wg genkey` writes)"));
  }
  pair.public_key = *pub;
  return pair;
}

absl::StatusOr<WireGuardKeyPair> LoadOrCreatePrivateKeyFile(const std::string& path, bool* created) {
  if (created != nullptr) *created = false;
  absl::StatusOr<WireGuardKeyPair> existing = ReadPrivateKeyFile(path);
  if (existing.status().code() != absl::StatusCode::kNotFound) return existing;
  PPN_ASSIGN_OR_RETURN(WireGuardKeyPair pair, GenerateKeyPair());
  PPN_RETURN_IF_ERROR(WriteFileAtomically(path, pair.private_key + "\n", 0600));
  if (created != nullptr) *created = true;
  return pair;
}

}  // namespace ppn::mesh
