#pragma once

// WireGuard keys in WireGuard's own form (Curve25519, 32 bytes, standard base64 of 44
// characters) and the node's private-key file. The private key is a SECRET: it lives in a
// file of mode 0600 on the node, is handed to `wg` by path only, and no function here puts it
// in an error message. Pure (OpenSSL and POSIX files); thread-safe.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn::mesh {

struct WireGuardKeyPair {
  std::string private_key;  // SECRET: base64, never logged, never leaves the node
  std::string public_key;   // base64
};

// True when `key` is exactly 44 characters of canonical base64 encoding 32 bytes.
bool IsWireGuardKey(absl::string_view key);

// A fresh key pair (X25519, as `wg genkey` / `wg pubkey` make them).
absl::StatusOr<WireGuardKeyPair> GenerateKeyPair();

// The public key of `private_key`. INVALID_ARGUMENT (without the key) if it is not a
// WireGuard key.
absl::StatusOr<std::string> PublicKeyOf(absl::string_view private_key);

// Reads the private-key file at `path` (one key, a trailing newline allowed) and derives its
// public key. NOT_FOUND if it does not exist; FAILED_PRECONDITION if it is not a regular file
// or group or others may read or write it (it must be 0600); INVALID_ARGUMENT if it does not
// hold a WireGuard private key. Messages name the path, never the content.
absl::StatusOr<WireGuardKeyPair> ReadPrivateKeyFile(const std::string& path);

// ReadPrivateKeyFile, or, when `path` does not exist, a new key written there with mode
// 0600 (the founding node's first start). `*created` tells which, when non-null.
absl::StatusOr<WireGuardKeyPair> LoadOrCreatePrivateKeyFile(const std::string& path, bool* created = nullptr);

}  // namespace ppn::mesh
