#include "ledger/log_membership_source.h"

#include "absl/strings/match.h"
#include "common/status_macros.h"

namespace ppn::ledger {

absl::StatusOr<mesh::MembershipBatch> LogMembershipSource::Next(absl::Duration wait) {
  absl::MutexLock l(&mu_);
  if (catch_up_to_ < 0) catch_up_to_ = static_cast<int64_t>(log_->size());
  if (next_ >= log_->size()) log_->WaitForGrowth(next_, wait);
  mesh::MembershipBatch batch;
  PPN_ASSIGN_OR_RETURN(std::vector<ppn::ledger::v1::Entry> entries, log_->GetEntries(next_, 256, ""));
  for (ppn::ledger::v1::Entry& e : entries) {
    next_ = e.index() + 1;
    if (absl::StartsWith(e.kind(), "node.")) batch.entries.push_back(std::move(e));
  }
  batch.caught_up = static_cast<int64_t>(next_) >= catch_up_to_;
  return batch;
}

}  // namespace ppn::ledger
