#pragma once

// TokenAuthenticator maps a bearer token to its tenant by SHA-256, comparing in constant
// time. It keeps only hashes; a token is never stored, logged or returned. Pure C++.
// Thread-safe; Replace swaps the whole table at once (TenantAdmin's live changes).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
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

  // Replaces the tokens with `config`'s; on INVALID_ARGUMENT (as Create) nothing changes.
  absl::Status Replace(const ppn::tenancy::v1::ProxyConfig& config);

 private:
  struct Entry {
    std::string hash;  // 32 raw bytes
    std::string tenant_id;
    bool revoked;
  };
  using Table = std::vector<Entry>;
  static absl::StatusOr<std::shared_ptr<const Table>> Build(const ppn::tenancy::v1::ProxyConfig& config);

  // A pointer, so the authenticator stays movable (Create returns it by value).
  std::unique_ptr<absl::Mutex> mu_ = std::make_unique<absl::Mutex>();
  std::shared_ptr<const Table> entries_;  // guarded by *mu_; the table itself is immutable
};

// Lowercase hex SHA-256 of `token` (what the config holds).
std::string TokenHash(absl::string_view token);

// Reads a ProxyConfig in protobuf text format. INVALID_ARGUMENT naming the file if it does not
// parse, or naming the tenant whose egress default is malformed (ValidateEgressPolicy's words).
absl::StatusOr<ppn::tenancy::v1::ProxyConfig> LoadProxyConfig(const std::string& path);

}  // namespace ppn::proxy
