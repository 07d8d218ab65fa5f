#pragma once

// RoleAuthProcessor enforces a RolePolicy on every call of a mTLS server, inside gRPC's
// authentication step, so a denied call never reaches a handler.

#include <memory>

#include "common/revocation_list.h"
#include "common/role_policy.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace ppn {

// Thread-safe; the policy is read-only once the server runs. `*revocations` (optional) must
// outlive the server; it may change while the server runs.
class RoleAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit RoleAuthProcessor(RolePolicy policy, const RevocationList* revocations = nullptr)
      : policy_(std::move(policy)), revocations_(revocations) {}

  // The check is a hash lookup; run it inline on gRPC's thread.
  bool IsBlocking() const override { return false; }

  // UNAUTHENTICATED without a valid SPIFFE certificate or with a revoked one (health checks
  // included: a revoked node learns nothing), PERMISSION_DENIED when the role may not call the
  // method. Logs each refusal once at debug level (peer id and method only).
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata, OutputMetadata* response_metadata) override;

 private:
  const RolePolicy policy_;
  const RevocationList* const revocations_;
};

}  // namespace ppn
