#pragma once

// RoleAuthProcessor enforces a RolePolicy on every call of a mTLS server, inside gRPC's
// authentication step, so a denied call never reaches a handler.

#include <memory>

#include "common/role_policy.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace ppn {

// Thread-safe; the policy is read-only once the server runs.
class RoleAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit RoleAuthProcessor(RolePolicy policy) : policy_(std::move(policy)) {}

  // The check is a hash lookup; run it inline on gRPC's thread.
  bool IsBlocking() const override { return false; }

  // UNAUTHENTICATED without a valid SPIFFE certificate, PERMISSION_DENIED when the role may
  // not call the method. Logs each refusal once at debug level (peer id and method only).
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata, OutputMetadata* response_metadata) override;

 private:
  const RolePolicy policy_;
};

}  // namespace ppn
