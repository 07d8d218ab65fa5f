#pragma once

// LogMembershipSource reads the membership entries straight from the ledger's own MerkleLog,
// so the ledger feeds its RevocationList (common/revocation_follower.h) from what it stores,
// in-process, without a certificate of its own among its callers. Thread-safe; `*log` must
// outlive it.

#include "absl/synchronization/mutex.h"
#include "ledger/merkle_log.h"
#include "mesh/membership_source.h"

namespace ppn::ledger {

class LogMembershipSource final : public mesh::MembershipSource {
 public:
  explicit LogMembershipSource(MerkleLog* log) : log_(log) {}
  absl::StatusOr<mesh::MembershipBatch> Next(absl::Duration wait) override;

 private:
  MerkleLog* const log_;
  absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t catch_up_to_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace ppn::ledger
