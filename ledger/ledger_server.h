#pragma once

// Builds the ledger's gRPC server: mTLS, the role allow-list, the service, health, reflection.

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/revocation_list.h"
#include "common/role_policy.h"
#include "common/tls_credentials.h"
#include "ledger/ledger_service.h"

namespace ppn::ledger {

// Appends are open to the roles that own some entry kind (AppendPolicy narrows by kind);
// reads to every service role of the mesh.
RolePolicy LedgerRolePolicy(const std::string& mesh);

// Starts serving `service` on `listen` ("host:port", port 0 picks one).
absl::StatusOr<StartedServer> StartLedgerServer(const std::string& mesh, const std::string& listen, const TlsFiles& tls,
                                                LedgerService* service, const RevocationList* revocations = nullptr);

}  // namespace ppn::ledger
