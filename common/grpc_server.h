#pragma once

// Starts a PPN gRPC server: credentials with their auth processor, the services, gRPC
// health (every service SERVING) and server reflection. Every binary builds its server here.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/revocation_list.h"
#include "common/role_policy.h"
#include "common/tls_credentials.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"

namespace ppn {

struct ServerOptions {
  // "host:port", or several separated by commas (a node's mesh address and loopback); port 0
  // picks a free one (tests); StartedServer.port is the first address's.
  std::string listen_address;
  // From MtlsServerCredentials / TlsServerCredentials.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Runs before every handler (RoleAuthProcessor for mesh servers). Required.
  std::shared_ptr<grpc::AuthMetadataProcessor> auth_processor;
  // Services to serve; not owned, must outlive the server.
  std::vector<grpc::Service*> services;
  // Largest request accepted, in bytes.
  int max_receive_message_bytes = 4 << 20;
};

// A started server and the port it bound.
struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

// Starts the server. UNAVAILABLE naming the address if it cannot bind; INVALID_ARGUMENT if
// the options are incomplete.
absl::StatusOr<StartedServer> StartServer(const ServerOptions& options);

// A mesh server: mTLS with `tls`, every call checked against `policy` before its handler and,
// with `revocations` (which must outlive the server), refused for a revoked identity. Every
// production server passes its list; only tests of other things pass none.
absl::StatusOr<StartedServer> StartMeshServer(const std::string& listen, const TlsFiles& tls, RolePolicy policy,
                                              std::vector<grpc::Service*> services,
                                              const RevocationList* revocations = nullptr);

}  // namespace ppn
