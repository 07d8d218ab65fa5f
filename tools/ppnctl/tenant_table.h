#pragma once

// How `ppnctl tenant list` prints the proxy's tenants (usage against each limit, the rate limit,
// token ids) and how `tenant add` and `tenant rotate-token` print a new token: once, with the
// warning that only its hash is kept. Pure.

#include <string>

#include "ppn/tenancy/v1/tenant_admin.pb.h"

namespace ppn::ppnctl {

// NAME VMS VCPUS MEMORY_MIB DISK_GIB RATE TOKENS; usage/limit ("-" without a limit; "?/N" when
// the fleet could not say), then the reason usage is missing.
std::string RenderTenants(const ppn::tenancy::v1::ListTenantsResponse& tenants);

// The token on a line of its own after one line saying whose it is.
std::string RenderNewToken(const std::string& tenant_id, const std::string& token, const std::string& token_id);

}  // namespace ppn::ppnctl
