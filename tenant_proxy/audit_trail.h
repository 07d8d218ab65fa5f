#pragma once

// AuditTrail records every tenant create and destroy (and every refusal) twice: as one JSON
// line in a local append-only file, fsync'd before the caller gets an answer, and as a ledger
// entry. Ledger records first go to a durable SQLite spool; a delivery thread appends them in
// order with the spool sequence as idempotency key, and deletes each only once the ledger
// has acknowledged it — so an unreachable ledger delays records but loses and duplicates
// none. Never records a token. Thread-safe.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/sqlite.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::proxy {

struct AuditRecord {
  std::string tenant_id;
  std::string operation;  // "tenant.vm.create", "tenant.vm.destroy"
  std::string vm_id;      // empty when refused before one existed
  ppn::ledger::v1::Outcome outcome = ppn::ledger::v1::OUTCOME_SUCCESS;
  std::string detail;    // status code name or a short reason; never a secret
  std::string token_id;  // hash prefix of the caller's token
};

// Appends one entry to the ledger; the gRPC implementation lives in the server.
using LedgerAppendFn = std::function<absl::Status(const ppn::ledger::v1::AppendRequest&)>;

class AuditTrail {
 public:
  // `audit_file` (JSON lines) and `spool_db` are created if missing.
  static absl::StatusOr<std::unique_ptr<AuditTrail>> Open(const std::string& audit_file, const std::string& spool_db,
                                                          Clock* clock, LedgerAppendFn append);
  ~AuditTrail();  // stops delivery; what is spooled stays for the next start

  // Durably records `record` locally and in the spool. Error only if that fails.
  absl::Status Record(const AuditRecord& record);
  // Starts delivering the spool to the ledger, retrying every `retry` while it is down.
  void StartDelivery(absl::Duration retry);
  // Records still waiting for the ledger.
  int64_t Pending();
  // One delivery pass (tests): returns how many records were delivered.
  int DeliverOnce();

 private:
  AuditTrail(int fd, std::unique_ptr<Database> db, Clock* clock, LedgerAppendFn append)
      : fd_(fd), db_(std::move(db)), clock_(clock), append_(std::move(append)) {}

  const int fd_;
  absl::Mutex mu_;  // serializes the file, the spool and delivery
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  Clock* const clock_;
  const LedgerAppendFn append_;
  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread delivery_;
};

}  // namespace ppn::proxy
