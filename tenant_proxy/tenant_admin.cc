#include "tenant_proxy/tenant_admin.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/logging.h"
#include "common/spiffe_id.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "google/protobuf/text_format.h"
#include "spdlog/spdlog.h"

namespace ppn::proxy {
namespace {

using ppn::tenancy::v1::TenantConfig;
using ppn::tenancy::v1::TenantSummary;

std::string IdOf(const std::string& hash_hex) { return hash_hex.substr(0, 8); }

TenantConfig* Find(ppn::tenancy::v1::ProxyConfig& config, const std::string& tenant_id) {
  for (TenantConfig& t : *config.mutable_tenants()) {
    if (t.tenant_id() == tenant_id) return &t;
  }
  return nullptr;
}

absl::Status UnknownTenant(const std::string& tenant_id) {
  return absl::NotFoundError(absl::StrCat("tenant ", tenant_id.substr(0, 63), " not found"));
}

}  // namespace

TenantSummary SummaryOf(const TenantConfig& tenant) {
  TenantSummary s;
  s.set_tenant_id(tenant.tenant_id());
  *s.mutable_limits() = tenant.limits();
  *s.mutable_egress() = tenant.egress();
  for (const std::string& h : tenant.token_sha256()) s.add_token_ids(IdOf(h));
  for (const std::string& h : tenant.revoked_token_sha256()) s.add_revoked_token_ids(IdOf(h));
  return s;
}

absl::StatusOr<std::string> TenantAdmin::NewTokenLocked() {
  uint8_t bytes[32];
  PPN_RETURN_IF_ERROR(random_->Fill(bytes, sizeof bytes));
  std::string token = "ppn_" + absl::WebSafeBase64Escape(std::string(reinterpret_cast<char*>(bytes), sizeof bytes));
  return token;
}

absl::Status TenantAdmin::CommitLocked(const ppn::tenancy::v1::ProxyConfig& next) {
  for (const TenantConfig& t : next.tenants()) {
    absl::Status egress = ValidateEgressPolicy(t.egress());
    if (!egress.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tenant ", t.tenant_id(), "'s default ", egress.message()));
    }
  }
  // Validates ids and hashes as a start would, before anything is written.
  PPN_RETURN_IF_ERROR(TokenAuthenticator::Create(next).status());
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(next, &text)) return absl::InternalError("cannot print the config");
  // On disk first: what the proxy applies is what it would read after a restart.
  PPN_RETURN_IF_ERROR(WriteFileAtomically(path_, "# Written by the tenant proxy (TenantAdmin).\n" + text, 0600));
  PPN_RETURN_IF_ERROR(auth_->Replace(next));
  core_->ApplyConfig(next);
  config_ = next;
  return absl::OkStatus();
}

absl::StatusOr<ppn::tenancy::v1::AddTenantResponse> TenantAdmin::AddTenant(
    const ppn::tenancy::v1::AddTenantRequest& request) {
  const std::string& id = request.tenant_id();
  if (!IsValidIdPart(id) || absl::StrContains(id, ".")) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant id \"", id.substr(0, 63), "\" must be 1-63 characters of [a-z0-9-]"));
  }
  absl::MutexLock l(&mu_);
  if (Find(config_, id) != nullptr) return absl::AlreadyExistsError(absl::StrCat("tenant ", id, " already exists"));
  PPN_ASSIGN_OR_RETURN(std::string token, NewTokenLocked());
  ppn::tenancy::v1::ProxyConfig next = config_;
  TenantConfig* t = next.add_tenants();
  t->set_tenant_id(id);
  *t->mutable_limits() = request.limits();
  *t->mutable_egress() = request.egress();
  t->add_token_sha256(TokenHash(token));
  PPN_RETURN_IF_ERROR(CommitLocked(next));
  spdlog::info("tenant.added tenant={} token_id={}", id, IdOf(TokenHash(token)));
  ppn::tenancy::v1::AddTenantResponse resp;
  *resp.mutable_tenant() = SummaryOf(*t);
  resp.set_token(token);
  return resp;
}

ppn::tenancy::v1::ListTenantsResponse TenantAdmin::ListTenants() {
  ppn::tenancy::v1::ProxyConfig config;
  {
    absl::MutexLock l(&mu_);
    config = config_;
  }
  ppn::tenancy::v1::ListTenantsResponse resp;
  for (const TenantConfig& t : config.tenants()) {
    TenantSummary* s = resp.add_tenants();
    *s = SummaryOf(t);
    if (!resp.usage_error().empty()) continue;
    absl::StatusOr<ppn::tenancy::v1::Usage> usage = core_->UsageFor(TenantId(t.tenant_id()));
    if (usage.ok()) {
      *s->mutable_usage() = *usage;
    } else {
      resp.set_usage_error(absl::StrCat("usage unknown: ", usage.status().message()));
    }
  }
  std::sort(resp.mutable_tenants()->begin(), resp.mutable_tenants()->end(),
            [](const TenantSummary& a, const TenantSummary& b) { return a.tenant_id() < b.tenant_id(); });
  return resp;
}

absl::StatusOr<ppn::tenancy::v1::RotateTokenResponse> TenantAdmin::RotateToken(const std::string& tenant_id,
                                                                               bool keep_existing) {
  absl::MutexLock l(&mu_);
  ppn::tenancy::v1::ProxyConfig next = config_;
  TenantConfig* t = Find(next, tenant_id);
  if (t == nullptr) return UnknownTenant(tenant_id);
  PPN_ASSIGN_OR_RETURN(std::string token, NewTokenLocked());
  ppn::tenancy::v1::RotateTokenResponse resp;
  if (!keep_existing) {
    for (const std::string& h : t->token_sha256()) {
      t->add_revoked_token_sha256(h);
      resp.add_revoked_token_ids(IdOf(h));
    }
    t->clear_token_sha256();
  }
  t->add_token_sha256(TokenHash(token));
  PPN_RETURN_IF_ERROR(CommitLocked(next));
  resp.set_tenant_id(tenant_id);
  resp.set_token(token);
  resp.set_token_id(IdOf(TokenHash(token)));
  spdlog::info("tenant.token_rotated tenant={} token_id={} revoked={}", tenant_id, resp.token_id(),
               resp.revoked_token_ids_size());
  return resp;
}

absl::StatusOr<TenantSummary> TenantAdmin::RevokeToken(const std::string& tenant_id, const std::string& token_id) {
  absl::MutexLock l(&mu_);
  ppn::tenancy::v1::ProxyConfig next = config_;
  TenantConfig* t = Find(next, tenant_id);
  if (t == nullptr) return UnknownTenant(tenant_id);
  if (token_id.size() != 8) return absl::InvalidArgumentError("a token id is the first 8 hex digits of its hash");
  for (const std::string& h : t->revoked_token_sha256()) {
    if (IdOf(h) == token_id) return SummaryOf(*t);
  }
  int found = -1;
  for (int i = 0; i < t->token_sha256_size(); ++i) {
    if (IdOf(t->token_sha256(i)) == token_id) found = i;
  }
  if (found < 0) {
    return absl::NotFoundError(absl::StrCat("tenant ", tenant_id, " has no token ", LogValue(token_id)));
  }
  t->add_revoked_token_sha256(t->token_sha256(found));
  t->mutable_token_sha256()->erase(t->mutable_token_sha256()->begin() + found);
  PPN_RETURN_IF_ERROR(CommitLocked(next));
  spdlog::info("tenant.token_revoked tenant={} token_id={}", tenant_id, token_id);
  return SummaryOf(*t);
}

absl::StatusOr<TenantSummary> TenantAdmin::SetLimits(const std::string& tenant_id,
                                                     const ppn::tenancy::v1::Limits& limits) {
  absl::MutexLock l(&mu_);
  ppn::tenancy::v1::ProxyConfig next = config_;
  TenantConfig* t = Find(next, tenant_id);
  if (t == nullptr) return UnknownTenant(tenant_id);
  *t->mutable_limits() = limits;
  PPN_RETURN_IF_ERROR(CommitLocked(next));
  spdlog::info("tenant.limits_set tenant={} max_vms={} max_vcpus={} max_memory_mib={} max_disk_gib={}", tenant_id,
               limits.max_vms(), limits.max_vcpus(), limits.max_memory_mib(), limits.max_disk_gib());
  return SummaryOf(*t);
}

}  // namespace ppn::proxy
