#pragma once

// TenantAdmin is the core of the operator's live tenant management (ppn.tenancy.v1.TenantAdmin):
// it owns the proxy's configuration (ProxyConfig), changes it, writes it to the config file
// atomically (protobuf text format, mode 0600) and only then applies it to the token
// authenticator and the proxy core, so the next call sees it and a restart reads the same. A
// change that cannot be written applies nowhere. New tokens come from `random` (32 bytes,
// "ppn_" + base64url); only their SHA-256 is kept, and a token is never logged (its id, the
// first 8 hex digits of its hash, is). Pure C++. Thread-safe: one change at a time; `*auth`,
// `*core` and `*random` must outlive it.

#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/random.h"
#include "ppn/tenancy/v1/proxy_config.pb.h"
#include "ppn/tenancy/v1/tenant_admin.pb.h"
#include "tenant_proxy/proxy_core.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

class TenantAdmin {
 public:
  TenantAdmin(std::string config_path, ppn::tenancy::v1::ProxyConfig config, TokenAuthenticator* auth, ProxyCore* core,
              RandomSource* random)
      : path_(std::move(config_path)), config_(std::move(config)), auth_(auth), core_(core), random_(random) {}

  // ALREADY_EXISTS for a tenant that exists; INVALID_ARGUMENT for a bad id or egress default.
  absl::StatusOr<ppn::tenancy::v1::AddTenantResponse> AddTenant(const ppn::tenancy::v1::AddTenantRequest& request);
  // Limits and tokens from the configuration; usage from the fleet (usage_error says why not).
  ppn::tenancy::v1::ListTenantsResponse ListTenants();
  // NOT_FOUND for an unknown tenant.
  absl::StatusOr<ppn::tenancy::v1::RotateTokenResponse> RotateToken(const std::string& tenant_id, bool keep_existing);
  // NOT_FOUND for an unknown tenant or token id; revoking a revoked token changes nothing.
  absl::StatusOr<ppn::tenancy::v1::TenantSummary> RevokeToken(const std::string& tenant_id,
                                                              const std::string& token_id);
  // NOT_FOUND for an unknown tenant.
  absl::StatusOr<ppn::tenancy::v1::TenantSummary> SetLimits(const std::string& tenant_id,
                                                            const ppn::tenancy::v1::Limits& limits);

 private:
  // Checks, writes and applies `next`; config_ becomes it only if all succeed.
  absl::Status CommitLocked(const ppn::tenancy::v1::ProxyConfig& next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> NewTokenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  ppn::tenancy::v1::ProxyConfig config_ ABSL_GUARDED_BY(mu_);
  TokenAuthenticator* const auth_;
  ProxyCore* const core_;
  RandomSource* const random_;
};

// The operator's view of one configured tenant (no usage).
ppn::tenancy::v1::TenantSummary SummaryOf(const ppn::tenancy::v1::TenantConfig& tenant);

}  // namespace ppn::proxy
