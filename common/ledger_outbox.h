#pragma once

// LedgerOutbox: the one way a service records events in the ledger without losing or
// doubling any. Enqueue() makes an entry durable in a local SQLite spool before it returns;
// a delivery thread appends spooled entries to the ledger in order, each with an idempotency
// key unique to this spool (a random spool id and the entry's sequence), and deletes each only
// once the ledger has acknowledged it. An unreachable ledger delays entries; a restart
// resumes; a redelivery after a lost acknowledgement is a no-op in the ledger. An entry the
// ledger refuses for good (PERMISSION_DENIED, INVALID_ARGUMENT) is moved aside to the
// `refused` table with the reason, logged as an error, and does not block the rest.
// Thread-safe.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/sqlite.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn {

// Appends one entry to the ledger (the gRPC implementation is in grpc_ledger_appender.h).
using LedgerAppendFn = std::function<absl::Status(const ppn::ledger::v1::AppendRequest&)>;

class LedgerOutbox {
 public:
  // Opens (creating) the spool at `spool_db`. `key_prefix` names this appender in the
  // idempotency keys ("audit", "fleet", ...).
  static absl::StatusOr<std::unique_ptr<LedgerOutbox>> Open(const std::string& spool_db, const std::string& key_prefix,
                                                            LedgerAppendFn append);
  // Stops delivery; what is spooled stays for the next start.
  ~LedgerOutbox();

  // Durably spools `entry` (its idempotency_key is set at delivery). Error only if the spool
  // cannot be written; then nothing was spooled.
  absl::Status Enqueue(const ppn::ledger::v1::AppendRequest& entry);
  // Starts the delivery thread: it delivers at once after each Enqueue and retries every
  // `retry` while the ledger is down.
  void StartDelivery(absl::Duration retry);
  // Entries still waiting for the ledger (-1 if the spool cannot be read).
  int64_t Pending();
  // Entries the ledger refused for good.
  int64_t Refused();
  // One delivery pass: delivers in order until the spool is empty or the ledger fails.
  // Returns how many were delivered.
  int DeliverOnce();

 private:
  LedgerOutbox(std::unique_ptr<Database> db, std::string key_prefix, LedgerAppendFn append)
      : db_(std::move(db)), key_prefix_(std::move(key_prefix)), append_(std::move(append)) {}
  int64_t Count(const char* table);
  bool Woken() const ABSL_SHARED_LOCKS_REQUIRED(wake_mu_) { return stopping_ || pending_; }

  absl::Mutex mu_;  // the spool
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  std::string key_prefix_;  // "<prefix>-<spool id>-"
  const LedgerAppendFn append_;
  absl::Mutex deliver_mu_;  // one delivery pass at a time
  absl::Mutex wake_mu_;
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool pending_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread delivery_;
};

}  // namespace ppn
