#include "pairing/pairing_services.h"

#include <fstream>

#include "common/files.h"
#include "common/grpc_status.h"
#include "common/peer_identity.h"
#include "common/roles.h"
#include "common/rpc_log.h"
#include "common/status_macros.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "spdlog/spdlog.h"

namespace ppn::pairing {
namespace {

// The joiner's listener is open: whoever talks to it must prove the code through CPace.
class OpenProcessor final : public grpc::AuthMetadataProcessor {
 public:
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata&, grpc::AuthContext*, OutputMetadata*, OutputMetadata*) override {
    return grpc::Status::OK;
  }
};

}  // namespace

grpc::Status JoinerService::Exchange(grpc::ServerContext*, const v1::ExchangeRequest* r, v1::ExchangeResponse* out) {
  auto resp = core_->Exchange(*r);
  if (!resp.ok()) return RpcFailed("Exchange", resp.status());
  *out = *resp;
  return grpc::Status::OK;
}

grpc::Status JoinerService::Confirm(grpc::ServerContext*, const v1::ConfirmRequest* r, v1::ConfirmResponse* out) {
  auto resp = core_->Confirm(*r);
  if (!resp.ok()) return RpcFailed("Confirm", resp.status());
  *out = *resp;
  return grpc::Status::OK;
}

grpc::Status JoinerService::Complete(grpc::ServerContext*, const v1::CompleteRequest* r, v1::CompleteResponse* out) {
  auto resp = core_->Complete(*r);
  if (!resp.ok()) return RpcFailed("Complete", resp.status());
  *out = *resp;
  return grpc::Status::OK;
}

grpc::Status AdminService::ApproveNode(grpc::ServerContext*, const v1::ApproveNodeRequest* r,
                                       v1::ApproveNodeResponse* out) {
  auto resp = core_->Approve(r->joiner_address(), r->code());
  if (!resp.ok()) return RpcFailed("ApproveNode", resp.status());
  *out = *resp;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListPeers(grpc::ServerContext*, const v1::ListPeersRequest*, v1::ListPeersResponse* out) {
  for (auto& p : core_->Peers()) *out->add_peers() = std::move(p);
  return grpc::Status::OK;
}

grpc::Status AdminService::RevokeNode(grpc::ServerContext* context, const v1::RevokeNodeRequest* r,
                                      v1::RevokeNodeResponse* out) {
  absl::StatusOr<SpiffeId> caller = PeerSpiffeId(*context);
  if (!caller.ok()) return RpcFailed("RevokeNode", caller.status());
  auto resp = core_->Revoke(r->node_name(), r->reason(), caller->ToString());
  if (!resp.ok()) return RpcFailed("RevokeNode", resp.status(), {{"node", r->node_name()}});
  *out = *resp;
  return grpc::Status::OK;
}

RolePolicy PairingAdminRolePolicy(const std::string& mesh) {
  RolePolicy policy(mesh);
  policy.AllowService("ppn.pairing.v1.PairingAdmin", {roles::kOperator});
  policy.Allow("/ppn.pairing.v1.PairingAdmin/RevokeNode", {roles::kOperator, roles::kPairingAdmin});
  return policy;
}

absl::StatusOr<x509::Identity> EphemeralTlsIdentity(const std::string& node_name) {
  x509::CertRequest req;
  req.common_name = "ppn-pairing-" + node_name;
  absl::StatusOr<x509::Identity> ca = x509::MakeCa("pairing", absl::Seconds(700));
  if (!ca.ok()) return ca.status();
  req.dns_names = {"localhost", node_name};
  req.ips = {"127.0.0.1"};
  req.validity = absl::Seconds(700);
  return x509::Issue(*ca, req);
}

absl::StatusOr<StartedServer> StartJoinerServer(const std::string& listen, const x509::Identity& identity,
                                                const std::string& dir, JoinerService* service) {
  TlsFiles files{dir + "/pairing-tls.pem", dir + "/pairing-tls.pem", dir + "/pairing-tls.key"};
  PPN_RETURN_IF_ERROR(WriteFileAtomically(files.cert, identity.cert_pem, 0644));
  PPN_RETURN_IF_ERROR(WriteFileAtomically(files.key, identity.key_pem, 0600));
  ServerOptions options;
  options.listen_address = listen;
  options.credentials = TlsServerCredentials(files);
  options.auth_processor = std::make_shared<OpenProcessor>();
  options.services = {service};
  return StartServer(options);
}

}  // namespace ppn::pairing
