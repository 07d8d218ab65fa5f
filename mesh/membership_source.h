#pragma once

// MembershipSource is where the mesh agent reads the membership ledger: its `node.*` entries
// (ppn.ledger.v1.Entry: index, kind, subject, attributes, outcome) in index order, from the
// first on, then each new one as it is appended. GrpcMembershipSource reads the ledger's
// WatchEntries; testing/fake_membership_source.h feeds tests. Implementations are thread-safe.

#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::mesh {

struct MembershipBatch {
  std::vector<ppn::ledger::v1::Entry> entries;  // in index order, after those returned before
  // Every entry the ledger held when the source first reached it has been returned: the
  // table built so far is the ledger's, not a prefix of it.
  bool caught_up = false;
};

class MembershipSource {
 public:
  virtual ~MembershipSource() = default;
  // Waits up to `wait` for entries after those already returned (or for the catch-up to
  // complete) and returns them, possibly none. UNAVAILABLE, with the reason, while the ledger
  // cannot be reached and nothing is waiting: the source keeps reconnecting on its own and
  // resumes after the last entry it returned.
  virtual absl::StatusOr<MembershipBatch> Next(absl::Duration wait) = 0;
};

}  // namespace ppn::mesh
