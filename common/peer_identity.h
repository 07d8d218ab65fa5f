#pragma once

// Reads a gRPC peer's identity from its verified TLS certificate.

#include "absl/status/statusor.h"
#include "common/spiffe_id.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/server_context.h"

namespace ppn {

// Returns the SPIFFE id of the peer's verified certificate. UNAUTHENTICATED if the peer
// presented no certificate or one without exactly one valid spiffe:// URI SAN.
absl::StatusOr<SpiffeId> PeerSpiffeId(const grpc::AuthContext& auth_context);

// The same, for a call being served.
absl::StatusOr<SpiffeId> PeerSpiffeId(const grpc::ServerContext& context);

}  // namespace ppn
