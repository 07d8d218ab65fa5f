#pragma once

// Builds the fleet's gRPC server: mTLS and the fleet's role allow-list.

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/revocation_list.h"
#include "common/role_policy.h"
#include "common/tls_credentials.h"
#include "fleet/fleet_service.h"

namespace ppn::fleet {

// Create: tenant-proxy. Destroy: tenant-proxy (its tenant's VMs), operator (any VM).
// Reads: tenant-proxy, scheduler, operator.
// RecordMigration and SetPin: scheduler. WatchRelayRoutes: relay, operator.
RolePolicy FleetRolePolicy(const std::string& mesh);

absl::StatusOr<StartedServer> StartFleetServer(const std::string& mesh, const std::string& listen, const TlsFiles& tls,
                                               FleetService* service, const RevocationList* revocations = nullptr);

}  // namespace ppn::fleet
