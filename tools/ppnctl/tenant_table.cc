#include "tools/ppnctl/tenant_table.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/ppnctl/node_table.h"

namespace ppn::ppnctl {
namespace {

std::string OfLimit(bool known, uint64_t used, uint64_t limit, bool zero_is_unlimited) {
  std::string l = limit == 0 && zero_is_unlimited ? "-" : absl::StrCat(limit);
  return absl::StrCat(known ? absl::StrCat(used) : "?", "/", l);
}

}  // namespace

std::string RenderTenants(const ppn::tenancy::v1::ListTenantsResponse& tenants) {
  std::vector<std::vector<std::string>> rows = {{"NAME", "VMS", "VCPUS", "MEMORY_MIB", "DISK_GIB", "RATE", "TOKENS"}};
  for (const auto& t : tenants.tenants()) {
    bool known = t.has_usage();
    const auto& u = t.usage();
    const auto& l = t.limits();
    std::string rate =
        l.requests_per_second() > 0 ? absl::StrCat(l.requests_per_second(), "/s burst ", l.burst()) : "-";
    std::string tokens = absl::StrJoin(t.token_ids(), ",");
    if (tokens.empty()) tokens = "-";
    if (t.revoked_token_ids_size() > 0) absl::StrAppend(&tokens, " (", t.revoked_token_ids_size(), " revoked)");
    rows.push_back({t.tenant_id(), OfLimit(known, u.vms(), l.max_vms(), false),
                    OfLimit(known, u.vcpus(), l.max_vcpus(), false),
                    OfLimit(known, u.memory_mib(), l.max_memory_mib(), false),
                    OfLimit(known, u.disk_gib(), l.max_disk_gib(), true), rate, tokens});
  }
  std::string out = Table(rows);
  if (!tenants.usage_error().empty()) absl::StrAppend(&out, "\n", tenants.usage_error(), "\n");
  return out;
}

std::string RenderNewToken(const std::string& tenant_id, const std::string& token, const std::string& token_id) {
  return absl::StrCat("token ", token_id, " for tenant ", tenant_id,
                      " (shown once: the proxy keeps only its hash; store it now):\n", token, "\n");
}

}  // namespace ppn::ppnctl
