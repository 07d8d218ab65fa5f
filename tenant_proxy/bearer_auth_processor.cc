#include "tenant_proxy/bearer_auth_processor.h"

#include "common/grpc_status.h"
#include "spdlog/spdlog.h"

namespace ppn::proxy {

grpc::Status BearerAuthProcessor::Process(const InputMetadata& auth_metadata, grpc::AuthContext*, OutputMetadata*,
                                          OutputMetadata*) {
  auto path = auth_metadata.find(":path");
  std::string method = path == auth_metadata.end() ? "" : std::string(path->second.data(), path->second.size());
  // Health checks and reflection need no tenant.
  if (method.rfind("/grpc.health.v1.Health/", 0) == 0 || method.rfind("/grpc.reflection.", 0) == 0) {
    return grpc::Status::OK;
  }
  auto it = auth_metadata.find("authorization");
  absl::string_view header =
      it == auth_metadata.end() ? absl::string_view() : absl::string_view(it->second.data(), it->second.size());
  absl::StatusOr<Authenticated> who = authenticator_->Authenticate(header);
  if (!who.ok()) {
    spdlog::info("tenant.unauthenticated method={}", method);
    return ToGrpcStatus(who.status());
  }
  return grpc::Status::OK;
}

absl::StatusOr<Authenticated> TenantOf(const TokenAuthenticator& authenticator,
                                       const grpc::ServerContextBase& context) {
  auto it = context.client_metadata().find("authorization");
  if (it == context.client_metadata().end()) return authenticator.Authenticate("");
  return authenticator.Authenticate(absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace ppn::proxy
