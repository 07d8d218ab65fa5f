#pragma once

// TokenAuthenticator maps a bearer token to its tenant by SHA-256, comparing in constant
// time. It keeps only hashes; a token is never stored, logged or returned. Pure C++.
// Immutable after construction; thread-safe.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ppn/tenancy/v1/proxy_config.pb.h"

namespace ppn::proxy {

struct Authenticated {
  std::string tenant_id;
  std::string token_id;  // first 8 hex digits of the token's hash: safe to log
};

class TokenAuthenticator {
 public:
  // INVALID_ARGUMENT for a malformed config (bad tenant id, hash not 64 hex digits, a hash
  // listed twice).
  static absl::StatusOr<TokenAuthenticator> Create(const ppn::tenancy::v1::ProxyConfig& config);

  // `authorization` is the metadata value ("Bearer <token>"). UNAUTHENTICATED, with one
  // message for every failure (missing, malformed, unknown, revoked), so a caller learns
  // nothing about which tokens exist.
  absl::StatusOr<Authenticated> Authenticate(absl::string_view authorization) const;

 private:
  struct Entry {
    std::string hash;  // 32 raw bytes
    std::string tenant_id;
    bool revoked;
  };
  std::vector<Entry> entries_;
};

// Lowercase hex SHA-256 of `token` (what the config holds).
std::string TokenHash(absl::string_view token);

// Reads a ProxyConfig in protobuf text format. INVALID_ARGUMENT naming the file if it does not
// parse, or naming the tenant whose egress default is malformed (ValidateEgressPolicy's words).
absl::StatusOr<ppn::tenancy::v1::ProxyConfig> LoadProxyConfig(const std::string& path);

}  // namespace ppn::proxy
