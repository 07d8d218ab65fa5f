#include "tenant_proxy/tenant_proxy_server.h"

#include "common/roles.h"
#include "tenant_proxy/bearer_auth_processor.h"

namespace ppn::proxy {

absl::StatusOr<StartedServer> StartTenantServer(const std::string& listen, const TlsFiles& tls,
                                                const TokenAuthenticator* authenticator, TenantServiceImpl* service) {
  ServerOptions options;
  options.listen_address = listen;
  options.credentials = TlsServerCredentials(tls);
  options.auth_processor = std::make_shared<BearerAuthProcessor>(authenticator);
  options.services = {service};
  return StartServer(options);
}

RolePolicy TenantAdminRolePolicy(const std::string& mesh) {
  RolePolicy policy(mesh);
  policy.AllowService("ppn.tenancy.v1.TenantAdmin", {ppn::roles::kOperator});
  return policy;
}

absl::StatusOr<StartedServer> StartTenantAdminServer(const std::string& mesh, const std::string& listen,
                                                     const TlsFiles& tls, TenantAdminService* service,
                                                     const RevocationList* revocations) {
  return StartMeshServer(listen, tls, TenantAdminRolePolicy(mesh), {service}, revocations);
}

}  // namespace ppn::proxy
