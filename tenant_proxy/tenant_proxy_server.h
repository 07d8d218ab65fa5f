#pragma once

// Builds the tenant-facing server (TLS, bearer tokens) and the proxy's clients of the fleet
// and ledger (mTLS as role tenant-proxy).

#include <memory>

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/tls_credentials.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "tenant_proxy/audit_trail.h"
#include "tenant_proxy/tenant_service.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

// TLS without client certificates; every call but health and reflection needs a token.
// `*authenticator` must outlive the server.
absl::StatusOr<StartedServer> StartTenantServer(const std::string& listen, const TlsFiles& tls,
                                                const TokenAuthenticator* authenticator, TenantServiceImpl* service);

// Appends to the ledger at `address` with the proxy's mesh identity.
LedgerAppendFn LedgerAppender(const std::string& address, const TlsFiles& tls);

}  // namespace ppn::proxy
