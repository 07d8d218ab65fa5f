#pragma once

// gRPC adapters of the ceremony: PairingJoiner over JoinerCore (served on the joiner's
// ephemeral TLS certificate, open to anyone: CPace authenticates), PairingAdmin over
// AdminCore (mTLS, operator only).

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/role_policy.h"
#include "common/x509.h"
#include "pairing/admin.h"
#include "pairing/joiner.h"
#include "ppn/pairing/v1/pairing_service.grpc.pb.h"

namespace ppn::pairing {

class JoinerService final : public ppn::pairing::v1::PairingJoiner::Service {
 public:
  explicit JoinerService(JoinerCore* core) : core_(core) {}
  grpc::Status Exchange(grpc::ServerContext*, const v1::ExchangeRequest*, v1::ExchangeResponse*) override;
  grpc::Status Confirm(grpc::ServerContext*, const v1::ConfirmRequest*, v1::ConfirmResponse*) override;
  grpc::Status Complete(grpc::ServerContext*, const v1::CompleteRequest*, v1::CompleteResponse*) override;

 private:
  JoinerCore* const core_;
};

class AdminService final : public ppn::pairing::v1::PairingAdmin::Service {
 public:
  explicit AdminService(AdminCore* core) : core_(core) {}
  grpc::Status ApproveNode(grpc::ServerContext*, const v1::ApproveNodeRequest*, v1::ApproveNodeResponse*) override;
  grpc::Status ListPeers(grpc::ServerContext*, const v1::ListPeersRequest*, v1::ListPeersResponse*) override;
  grpc::Status RevokeNode(grpc::ServerContext*, const v1::RevokeNodeRequest*, v1::RevokeNodeResponse*) override;

 private:
  AdminCore* const core_;
};

// PairingAdmin for the operator; RevokeNode also for the pairing-admin role (the founding
// node's own tools).
RolePolicy PairingAdminRolePolicy(const std::string& mesh);

// A throw-away self-signed certificate for the joiner's TLS listener.
absl::StatusOr<x509::Identity> EphemeralTlsIdentity(const std::string& node_name);

// Serves `service` with TLS on `identity` (written to `dir`), no client certificates.
absl::StatusOr<StartedServer> StartJoinerServer(const std::string& listen, const x509::Identity& identity,
                                                const std::string& dir, JoinerService* service);

}  // namespace ppn::pairing
