#pragma once

// Builds the scheduler's gRPC server: mTLS and the scheduler's role allow-list.

#include <string>

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/revocation_list.h"
#include "common/role_policy.h"
#include "common/tls_credentials.h"
#include "scheduler/scheduler_service.h"

namespace ppn::scheduler {

// Every RPC (Migrate, Drain, Rebalance, Pin, Unpin): operator only.
RolePolicy SchedulerRolePolicy(const std::string& mesh);

absl::StatusOr<StartedServer> StartSchedulerServer(const std::string& mesh, const std::string& listen,
                                                   const TlsFiles& tls, SchedulerService* service,
                                                   const RevocationList* revocations = nullptr);

}  // namespace ppn::scheduler
