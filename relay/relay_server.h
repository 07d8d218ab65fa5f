#pragma once

// The relay's own gRPC server: mTLS and gRPC health only (the relay serves tenants on its
// ports, not over gRPC); it tells the mesh's tools that the relay is up.

#include <string>

#include "absl/status/statusor.h"
#include "common/grpc_server.h"
#include "common/revocation_list.h"
#include "common/tls_credentials.h"

namespace ppn::relay {

absl::StatusOr<StartedServer> StartRelayServer(const std::string& mesh, const std::string& listen, const TlsFiles& tls,
                                               const RevocationList* revocations = nullptr);

}  // namespace ppn::relay
