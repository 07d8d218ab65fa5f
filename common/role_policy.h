#pragma once

// RolePolicy is the per-method allow-list of certificate roles every PPN server enforces
// before any handler runs. Pure C++: the gRPC side is role_auth_processor.h.

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/spiffe_id.h"

namespace ppn {

// RolePolicy maps full method names ("/ppn.ledger.v1.Ledger/Append") to the roles allowed
// to call them. Anything not allowed is denied. Peers from another mesh (trust domain) are
// denied everything. Build it before the server starts; afterwards it is read-only and
// safe to share between threads.
class RolePolicy {
 public:
  // `mesh` is the trust domain every peer must belong to.
  explicit RolePolicy(std::string mesh);

  // Allows `roles` to call `method` ("/pkg.Service/Method").
  RolePolicy& Allow(absl::string_view method, std::initializer_list<absl::string_view> roles);
  // Allows `roles` to call every method of `service` ("pkg.Service").
  RolePolicy& AllowService(absl::string_view service, std::initializer_list<absl::string_view> roles);

  // OK if `peer` may call `method`; PERMISSION_DENIED naming the role and method otherwise.
  // Health checks and server reflection are allowed to every role of the mesh.
  absl::Status Check(absl::string_view method, const SpiffeId& peer) const;

  const std::string& mesh() const { return mesh_; }

 private:
  std::string mesh_;
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> methods_;
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> services_;
};

}  // namespace ppn
