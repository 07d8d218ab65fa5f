#include "tenant_proxy/token_authenticator.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/spiffe_id.h"
#include "common/tls_credentials.h"
#include "common/vm_spec.h"
#include "google/protobuf/text_format.h"

namespace ppn::proxy {
namespace {

std::string Sha256(absl::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

bool IsHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) || absl::ascii_isupper(c)) return false;
  }
  return true;
}

}  // namespace

std::string TokenHash(absl::string_view token) { return absl::BytesToHexString(Sha256(token)); }

absl::StatusOr<ppn::tenancy::v1::ProxyConfig> LoadProxyConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  ppn::tenancy::v1::ProxyConfig config;
  if (!google::protobuf::TextFormat::ParseFromString(*text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a valid ProxyConfig in protobuf text format"));
  }
  // A VM's policy is narrowed to its tenant's (NarrowEgress), which needs the default valid.
  for (const auto& t : config.tenants()) {
    absl::Status egress = ValidateEgressPolicy(t.egress());
    if (!egress.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tenant ", t.tenant_id(), "'s default ", egress.message()));
    }
  }
  return config;
}

absl::StatusOr<TokenAuthenticator> TokenAuthenticator::Create(const ppn::tenancy::v1::ProxyConfig& config) {
  TokenAuthenticator auth;
  absl::StatusOr<std::shared_ptr<const Table>> table = Build(config);
  if (!table.ok()) return table.status();
  auth.entries_ = *std::move(table);
  return auth;
}

absl::Status TokenAuthenticator::Replace(const ppn::tenancy::v1::ProxyConfig& config) {
  absl::StatusOr<std::shared_ptr<const Table>> table = Build(config);
  if (!table.ok()) return table.status();
  absl::MutexLock l(mu_.get());
  entries_ = *std::move(table);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const TokenAuthenticator::Table>> TokenAuthenticator::Build(
    const ppn::tenancy::v1::ProxyConfig& config) {
  auto entries = std::make_shared<Table>();
  std::set<std::string> seen_hashes, seen_tenants;
  for (const auto& t : config.tenants()) {
    if (!IsValidIdPart(t.tenant_id()) || absl::StrContains(t.tenant_id(), ".")) {
      return absl::InvalidArgumentError(
          absl::StrCat("tenant id \"", t.tenant_id(), "\" must be 1-63 characters of [a-z0-9-]"));
    }
    if (!seen_tenants.insert(t.tenant_id()).second) {
      return absl::InvalidArgumentError(absl::StrCat("tenant ", t.tenant_id(), " is configured twice"));
    }
    auto add = [&](const std::string& hex, bool revoked) -> absl::Status {
      if (!IsHex64(hex)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tenant ", t.tenant_id(), ": token hashes must be 64 lowercase hex digits"));
      }
      if (!seen_hashes.insert(hex).second) {
        return absl::InvalidArgumentError(absl::StrCat("tenant ", t.tenant_id(), ": a token hash is listed twice"));
      }
      entries->push_back({absl::HexStringToBytes(hex), t.tenant_id(), revoked});
      return absl::OkStatus();
    };
    for (const auto& h : t.token_sha256()) {
      absl::Status s = add(h, false);
      if (!s.ok()) return s;
    }
    for (const auto& h : t.revoked_token_sha256()) {
      absl::Status s = add(h, true);
      if (!s.ok()) return s;
    }
  }
  return std::shared_ptr<const Table>(std::move(entries));
}

absl::StatusOr<Authenticated> TokenAuthenticator::Authenticate(absl::string_view authorization) const {
  const absl::Status refused =
      absl::UnauthenticatedError("missing or invalid bearer token (send metadata \"authorization: Bearer <token>\")");
  absl::string_view token = authorization;
  if (!absl::ConsumePrefix(&token, "Bearer ") || token.empty() || token.size() > 4096) return refused;
  std::string hash = Sha256(token);
  // Compare with every entry, in constant time per entry, without stopping early.
  std::shared_ptr<const Table> entries;
  {
    absl::MutexLock l(mu_.get());
    entries = entries_;
  }
  const Entry* match = nullptr;
  for (const Entry& e : *entries) {
    if (CRYPTO_memcmp(e.hash.data(), hash.data(), hash.size()) == 0) match = &e;
  }
  if (match == nullptr || match->revoked) return refused;
  return Authenticated{match->tenant_id, absl::BytesToHexString(hash).substr(0, 8)};
}

}  // namespace ppn::proxy
