#include "scheduler/scheduler_server.h"

#include "common/roles.h"

namespace ppn::scheduler {

RolePolicy SchedulerRolePolicy(const std::string& mesh) {
  RolePolicy policy(mesh);
  policy.AllowService("ppn.scheduler.v1.Scheduler", {ppn::roles::kOperator});
  return policy;
}

absl::StatusOr<StartedServer> StartSchedulerServer(const std::string& mesh, const std::string& listen,
                                                   const TlsFiles& tls, SchedulerService* service,
                                                   const RevocationList* revocations) {
  return StartMeshServer(listen, tls, SchedulerRolePolicy(mesh), {service}, revocations);
}

}  // namespace ppn::scheduler
