#pragma once

// Builds the tenant-facing server (TLS, bearer tokens) and the operator's admin server (mTLS,
// TenantAdmin only).

#include <memory>

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/revocation_list.h"
#include "common/role_policy.h"
#include "common/tls_credentials.h"
#include "tenant_proxy/audit_trail.h"
#include "tenant_proxy/tenant_admin_service.h"
#include "tenant_proxy/tenant_service.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

// TLS without client certificates; every call but health and reflection needs a token.
// `*authenticator` must outlive the server.
absl::StatusOr<StartedServer> StartTenantServer(const std::string& listen, const TlsFiles& tls,
                                                const TokenAuthenticator* authenticator, TenantServiceImpl* service);

// TenantAdmin for the operator role, nothing for any other (a tenant holds no mesh certificate,
// and a token means nothing here).
RolePolicy TenantAdminRolePolicy(const std::string& mesh);

// mTLS with the proxy's mesh certificate on `listen`, a separate listener from the tenants':
// the only server that serves TenantAdmin. `*revocations` (optional) must outlive it.
absl::StatusOr<StartedServer> StartTenantAdminServer(const std::string& mesh, const std::string& listen,
                                                     const TlsFiles& tls, TenantAdminService* service,
                                                     const RevocationList* revocations = nullptr);

}  // namespace ppn::proxy
