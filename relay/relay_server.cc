#include "relay/relay_server.h"

#include "common/role_policy.h"

namespace ppn::relay {

absl::StatusOr<StartedServer> StartRelayServer(const std::string& mesh, const std::string& listen, const TlsFiles& tls,
                                               const RevocationList* revocations) {
  // No methods of its own: health (allowed to every role of the mesh) is all it serves.
  return StartMeshServer(listen, tls, RolePolicy(mesh), {}, revocations);
}

}  // namespace ppn::relay
