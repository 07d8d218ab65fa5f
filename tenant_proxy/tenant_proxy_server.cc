#include "tenant_proxy/tenant_proxy_server.h"

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

}  // namespace ppn::proxy
