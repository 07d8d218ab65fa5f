#include "host_agent/host_agent_server.h"

#include "common/role_auth_processor.h"
#include "common/roles.h"

namespace ppn::host {

RolePolicy HostAgentRolePolicy(const std::string& mesh) {
  RolePolicy policy(mesh);
  policy.AllowService("ppn.host.v1.HostAgent", {ppn::roles::kFleet, ppn::roles::kScheduler});
  return policy;
}

absl::StatusOr<StartedServer> StartHostAgentServer(const std::string& mesh, const std::string& listen,
                                                   const TlsFiles& tls, HostAgentService* service) {
  ServerOptions options;
  options.listen_address = listen;
  options.credentials = MtlsServerCredentials(tls);
  options.auth_processor = std::make_shared<RoleAuthProcessor>(HostAgentRolePolicy(mesh));
  options.services = {service};
  return StartServer(options);
}

}  // namespace ppn::host
