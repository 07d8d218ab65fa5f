#pragma once

// SPIFFE-style workload identities as PPN certificates carry them in a URI SAN:
// spiffe://<mesh>/<role>/<name>. Pure C++: no gRPC here.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn {

// SpiffeId is a parsed identity. All three parts are non-empty and contain no '/'.
struct SpiffeId {
  std::string mesh;  // trust domain, e.g. "ppn.local"
  std::string role;  // e.g. "fleet"
  std::string name;  // e.g. "fleet-1"

  // "spiffe://<mesh>/<role>/<name>".
  std::string ToString() const;
  bool operator==(const SpiffeId& other) const {
    return mesh == other.mesh && role == other.role && name == other.name;
  }
};

// Parses "spiffe://mesh/role/name"; INVALID_ARGUMENT naming the input otherwise.
absl::StatusOr<SpiffeId> ParseSpiffeId(absl::string_view uri);

// Checks that `part` may be a mesh, role or name: 1-63 characters of [a-z0-9.-].
bool IsValidIdPart(absl::string_view part);

}  // namespace ppn
