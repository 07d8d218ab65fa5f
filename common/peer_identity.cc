#include "common/peer_identity.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace ppn {
namespace {

std::vector<std::string> Property(const grpc::AuthContext& ctx, const char* name) {
  std::vector<std::string> values;
  for (const grpc::string_ref& v : ctx.FindPropertyValues(name)) {
    values.emplace_back(v.data(), v.size());
  }
  return values;
}

}  // namespace

absl::StatusOr<SpiffeId> PeerSpiffeId(const grpc::AuthContext& auth_context) {
  if (!auth_context.IsPeerAuthenticated()) {
    return absl::UnauthenticatedError("peer presented no verified certificate");
  }
  // gRPC sets peer_spiffe_id only when the certificate has exactly one spiffe:// URI SAN;
  // a certificate with several is ambiguous and refused.
  std::vector<std::string> ids = Property(auth_context, "peer_spiffe_id");
  if (ids.size() != 1) {
    int uris = 0;
    for (const std::string& san : Property(auth_context, "x509_subject_alternative_name")) {
      if (absl::StartsWith(san, "spiffe://")) ++uris;
    }
    return absl::UnauthenticatedError(uris > 1 ? "peer certificate has more than one spiffe:// URI SAN"
                                               : "peer certificate has no spiffe:// URI SAN");
  }
  absl::StatusOr<SpiffeId> id = ParseSpiffeId(ids[0]);
  if (!id.ok()) return absl::UnauthenticatedError(id.status().message());
  return id;
}

absl::StatusOr<SpiffeId> PeerSpiffeId(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return absl::UnauthenticatedError("call has no auth context");
  return PeerSpiffeId(*auth);
}

}  // namespace ppn
