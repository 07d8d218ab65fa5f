#include "common/role_auth_processor.h"

#include "common/grpc_status.h"
#include "common/peer_identity.h"
#include "spdlog/spdlog.h"

namespace ppn {

grpc::Status RoleAuthProcessor::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context, OutputMetadata*,
                                        OutputMetadata*) {
  auto path = auth_metadata.find(":path");
  if (path == auth_metadata.end()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "call has no method path");
  }
  std::string method(path->second.data(), path->second.size());
  absl::StatusOr<SpiffeId> peer = PeerSpiffeId(*context);
  if (!peer.ok()) {
    spdlog::debug("rpc.denied method={} code=UNAUTHENTICATED", method);
    return ToGrpcStatus(peer.status());
  }
  if (revocations_ != nullptr) {
    absl::Status revoked = revocations_->Check(*peer);
    if (!revoked.ok()) {
      spdlog::info("rpc.denied method={} peer={} code=UNAUTHENTICATED reason=revoked", method, peer->ToString());
      return ToGrpcStatus(revoked);
    }
  }
  absl::Status allowed = policy_.Check(method, *peer);
  if (!allowed.ok()) {
    spdlog::debug("rpc.denied method={} peer={} code=PERMISSION_DENIED", method, peer->ToString());
  }
  return ToGrpcStatus(allowed);
}

}  // namespace ppn
