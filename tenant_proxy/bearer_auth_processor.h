#pragma once

// BearerAuthProcessor authenticates every call on the tenant listener before any handler
// runs, so a call without a valid token never reaches one. The handler derives the tenant
// from the same metadata with the same TokenAuthenticator (TenantOf()): gRPC 1.51 shares
// auth-context properties between calls of one connection, so a tenant recorded there by one
// call could be read by the next call of another tenant on that connection.

#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/server_context.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

class BearerAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  // `*authenticator` must outlive the processor.
  explicit BearerAuthProcessor(const TokenAuthenticator* authenticator) : authenticator_(authenticator) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata, OutputMetadata* response_metadata) override;

 private:
  const TokenAuthenticator* const authenticator_;
};

// The caller of a call that passed the processor. UNAUTHENTICATED otherwise.
absl::StatusOr<Authenticated> TenantOf(const TokenAuthenticator& authenticator, const grpc::ServerContextBase& context);

}  // namespace ppn::proxy
