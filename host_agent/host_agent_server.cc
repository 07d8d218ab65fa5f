#include "host_agent/host_agent_server.h"

#include "common/roles.h"

namespace ppn::host {

RolePolicy HostAgentRolePolicy(const std::string& mesh) {
  RolePolicy policy(mesh);
  policy.AllowService("ppn.host.v1.HostAgent", {ppn::roles::kFleet});
  // The scheduler moves VMs and cleans up after a failed move; it does not create VMs, change
  // their networks or hand out private-network peers, which are the fleet's.
  for (const char* method : {"DestroyVm", "ListVms", "PrepareIncoming", "MigrateOut", "ResumeVm"}) {
    policy.Allow(std::string("/ppn.host.v1.HostAgent/") + method, {ppn::roles::kScheduler});
  }
  return policy;
}

absl::StatusOr<StartedServer> StartHostAgentServer(const std::string& mesh, const std::string& listen,
                                                   const TlsFiles& tls, HostAgentService* service,
                                                   const RevocationList* revocations) {
  return StartMeshServer(listen, tls, HostAgentRolePolicy(mesh), {service}, revocations);
}

}  // namespace ppn::host
