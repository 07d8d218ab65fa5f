#pragma once

// AuditTrail records every tenant create, destroy and network change (its intent before it is
// forwarded, and its outcome after) and every refusal of one, twice: as one JSON line in a local append-only
// file, fsync'd before the caller gets an answer, and as a ledger entry through a LedgerOutbox
// (common/ledger_outbox.h: a durable spool delivered in order, once each), so an unreachable
// ledger delays records but loses and duplicates none. Rate-limit refusals are only counted,
// and recorded aggregated: one line and one entry per tenant per window with the count, so a
// tenant cannot grow the permanent ledger by sending refused calls. Never records a token.
// Thread-safe.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/ledger_outbox.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::proxy {

// The ledger kind of an aggregated rate-limit record.
inline constexpr char kRateLimitKind[] = "tenant.rate_limit";

struct AuditRecord {
  std::string tenant_id;
  std::string operation;  // "tenant.vm.create", "tenant.vm.destroy", "tenant.vm.network", kRateLimitKind
  std::string vm_id;      // empty when refused before one existed
  ppn::ledger::v1::Outcome outcome = ppn::ledger::v1::OUTCOME_SUCCESS;  // PENDING for an intent
  std::string detail;        // status code name or a short reason; never a secret
  std::string token_id;      // hash prefix of the caller's token
  std::string request_id;    // the create's idempotency key, if it had one
  std::string display_name;  // the VM's display name, for a create
  int64_t count = 0;         // calls an aggregated record stands for (0: one call)
  // More of the call's shape (e.g. an egress policy's rule counts), as JSON keys and ledger
  // attributes of the same names; never a secret. Must not reuse the names above.
  std::map<std::string, std::string> attributes;
};

// The one table from a call's final status to its ledger outcome, for creates, destroys and
// network changes alike:
//   OK                                                     -> SUCCESS
//   the caller's request was refused: UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT,
//   OUT_OF_RANGE, NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED (a quota, the rate limit, no
//   host with room)                                        -> DENIED
//   anything else: it was attempted and did not complete (FAILED_PRECONDITION, ABORTED,
//   UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED)
//                                                          -> FAILURE
ppn::ledger::v1::Outcome OutcomeOf(const absl::Status& status);

struct AuditOptions {
  // Rate-limit refusals of one tenant within this long of its first are one record.
  absl::Duration rate_limit_window = absl::Seconds(10);
};

class AuditTrail {
 public:
  // `audit_file` (JSON lines) and `spool_db` are created if missing. `*clock` must outlive
  // the trail.
  static absl::StatusOr<std::unique_ptr<AuditTrail>> Open(const std::string& audit_file, const std::string& spool_db,
                                                          Clock* clock, LedgerAppendFn append,
                                                          AuditOptions options = {});
  // Records every rate-limit window still open, then stops delivery; what is spooled stays
  // for the next start.
  ~AuditTrail();

  // Durably records `record` locally and in the spool. Error only if that fails.
  absl::Status Record(const AuditRecord& record);
  // Counts one call of `tenant_id` refused by the rate limit. Writes nothing itself: the
  // window is recorded by FlushRateLimited once it has ended (or at destruction).
  void CountRateLimited(const std::string& tenant_id);
  // Records each rate-limit window that has ended (every window when `all`). Returns how
  // many records it wrote; a window whose record failed is kept for the next flush.
  absl::StatusOr<int> FlushRateLimited(bool all = false);
  // Starts delivering the spool to the ledger, retrying every `retry` while it is down, and
  // a thread that records ended rate-limit windows.
  void StartDelivery(absl::Duration retry);
  // Records still waiting for the ledger.
  int64_t Pending();
  // One delivery pass (tests): returns how many records were delivered.
  int DeliverOnce();

 private:
  struct Window {
    std::string tenant_id;
    absl::Time first;
    absl::Time last;
    int64_t count = 0;
  };
  AuditTrail(int fd, std::unique_ptr<LedgerOutbox> outbox, Clock* clock, AuditOptions options)
      : fd_(fd), outbox_(std::move(outbox)), clock_(clock), options_(options) {}
  bool Stopping() const ABSL_SHARED_LOCKS_REQUIRED(flusher_mu_) { return stopping_; }

  const int fd_;
  absl::Mutex mu_;  // one record at a time: the file and the spool in the same order
  const std::unique_ptr<LedgerOutbox> outbox_;
  Clock* const clock_;
  const AuditOptions options_;

  absl::Mutex tally_mu_;
  std::map<std::string, Window> open_windows_ ABSL_GUARDED_BY(tally_mu_);  // by tenant
  std::vector<Window> ended_windows_ ABSL_GUARDED_BY(tally_mu_);

  absl::Mutex flusher_mu_;
  bool stopping_ ABSL_GUARDED_BY(flusher_mu_) = false;
  std::thread flusher_;
};

}  // namespace ppn::proxy
