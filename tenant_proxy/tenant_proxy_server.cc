#include "tenant_proxy/tenant_proxy_server.h"

#include "common/grpc_status.h"
#include "grpcpp/create_channel.h"
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

LedgerAppendFn LedgerAppender(const std::string& address, const TlsFiles& tls) {
  std::shared_ptr<ppn::ledger::v1::Ledger::Stub> stub =
      ppn::ledger::v1::Ledger::NewStub(grpc::CreateChannel(address, MtlsChannelCredentials(tls)));
  return [stub](const ppn::ledger::v1::AppendRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ppn::ledger::v1::AppendResponse resp;
    return FromGrpcStatus(stub->Append(&ctx, req, &resp));
  };
}

}  // namespace ppn::proxy
