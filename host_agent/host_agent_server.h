#pragma once

// Builds the host agent's gRPC server: mTLS, callable by the fleet and scheduler roles only.

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/revocation_list.h"
#include "common/role_policy.h"
#include "common/tls_credentials.h"
#include "host_agent/host_agent_service.h"

namespace ppn::host {

RolePolicy HostAgentRolePolicy(const std::string& mesh);

absl::StatusOr<StartedServer> StartHostAgentServer(const std::string& mesh, const std::string& listen,
                                                   const TlsFiles& tls, HostAgentService* service,
                                                   const RevocationList* revocations = nullptr);

}  // namespace ppn::host
