#pragma once

// Builds the tenant-facing server (TLS, bearer tokens).

#include <memory>

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/tls_credentials.h"
#include "tenant_proxy/audit_trail.h"
#include "tenant_proxy/tenant_service.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

// TLS without client certificates; every call but health and reflection needs a token.
// `*authenticator` must outlive the server.
absl::StatusOr<StartedServer> StartTenantServer(const std::string& listen, const TlsFiles& tls,
                                                const TokenAuthenticator* authenticator, TenantServiceImpl* service);

}  // namespace ppn::proxy
