#pragma once

// AuditTrail records every tenant create and destroy (and every refusal) twice: as one JSON
// line in a local append-only file, fsync'd before the caller gets an answer, and as a ledger
// entry through a LedgerOutbox (common/ledger_outbox.h: a durable spool delivered in order,
// once each), so an unreachable ledger delays records but loses and duplicates none. Never
// records a token. Thread-safe.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/ledger_outbox.h"
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
  AuditTrail(int fd, std::unique_ptr<LedgerOutbox> outbox, Clock* clock)
      : fd_(fd), outbox_(std::move(outbox)), clock_(clock) {}

  const int fd_;
  absl::Mutex mu_;  // one record at a time: the file and the spool in the same order
  const std::unique_ptr<LedgerOutbox> outbox_;
  Clock* const clock_;
};

}  // namespace ppn::proxy
