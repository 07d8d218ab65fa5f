#include "common/ledger_outbox.h"

#include "common/request_id.h"

#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace ppn {
namespace {

bool RefusedForGood(const absl::Status& s) {
  return s.code() == absl::StatusCode::kPermissionDenied || s.code() == absl::StatusCode::kInvalidArgument;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LedgerOutbox>> LedgerOutbox::Open(const std::string& spool_db,
                                                                 const std::string& key_prefix, LedgerAppendFn append) {
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(spool_db));
  // Version 1 is the tenant proxy's first spool; later versions keep its rows.
  PPN_RETURN_IF_ERROR(db->Migrate({
      "CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, request BLOB NOT NULL)",
      "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE refused (seq INTEGER PRIMARY KEY, request BLOB NOT NULL, reason TEXT NOT NULL)",
  }));
  // A spool made anew (its file lost) must not reuse the keys of the one before it: the ledger
  // would take its first entries for redeliveries and drop them.
  PPN_ASSIGN_OR_RETURN(Statement get, db->Prepare("SELECT value FROM meta WHERE key = 'spool_id'"));
  std::string spool_id;
  PPN_ASSIGN_OR_RETURN(bool found, get.Step());
  if (found) {
    spool_id = get.ColumnText(0);
  } else {
    unsigned char raw[8];
    if (RAND_bytes(raw, sizeof raw) != 1) return absl::InternalError("no randomness for a spool id");
    spool_id = absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(raw), sizeof raw));
    PPN_ASSIGN_OR_RETURN(Statement put, db->Prepare("INSERT INTO meta (key, value) VALUES ('spool_id', ?)"));
    PPN_RETURN_IF_ERROR(put.Bind(1, spool_id).Run());
  }
  return std::unique_ptr<LedgerOutbox>(
      new LedgerOutbox(std::move(db), absl::StrCat(key_prefix, "-", spool_id, "-"), std::move(append)));
}

LedgerOutbox::~LedgerOutbox() {
  {
    absl::MutexLock l(&wake_mu_);
    stopping_ = true;
  }
  if (delivery_.joinable()) delivery_.join();
}

absl::Status LedgerOutbox::Enqueue(const ppn::ledger::v1::AppendRequest& entry) {
  ppn::ledger::v1::AppendRequest traced = entry;
  // The entry names the request that caused it, so the ledger, the logs and the caller agree.
  if (!CurrentRequestId().empty()) traced.mutable_attributes()->try_emplace("request_trace", CurrentRequestId());
  {
    absl::MutexLock l(&mu_);
    PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("INSERT INTO spool (request) VALUES (?)"));
    PPN_RETURN_IF_ERROR(stmt.BindBlob(1, traced.SerializeAsString()).Run());
  }
  absl::MutexLock l(&wake_mu_);
  pending_ = true;
  return absl::OkStatus();
}

int64_t LedgerOutbox::Count(const char* table) {
  absl::MutexLock l(&mu_);
  absl::StatusOr<Statement> stmt = db_->Prepare(absl::StrCat("SELECT COUNT(*) FROM ", table));
  if (!stmt.ok() || !stmt->Step().value_or(false)) return -1;
  return stmt->ColumnInt(0);
}

int64_t LedgerOutbox::Pending() { return Count("spool"); }
int64_t LedgerOutbox::Refused() { return Count("refused"); }

int LedgerOutbox::DeliverOnce() {
  absl::MutexLock one(&deliver_mu_);
  int delivered = 0;
  while (true) {
    int64_t seq;
    std::string blob;
    {
      absl::MutexLock l(&mu_);
      absl::StatusOr<Statement> stmt = db_->Prepare("SELECT seq, request FROM spool ORDER BY seq LIMIT 1");
      if (!stmt.ok() || !stmt->Step().value_or(false)) return delivered;
      seq = stmt->ColumnInt(0);
      blob = stmt->ColumnBlob(1);
    }
    ppn::ledger::v1::AppendRequest req;
    req.ParseFromString(blob);
    req.set_idempotency_key(absl::StrCat(key_prefix_, seq));
    absl::Status s = append_(req);
    if (!s.ok() && !RefusedForGood(s)) {
      spdlog::warn("ledger.unavailable pending_from={} code={}", seq, absl::StatusCodeToString(s.code()));
      return delivered;
    }
    absl::MutexLock l(&mu_);
    Transaction tx(*db_);
    if (!tx.Begin().ok()) return delivered;
    if (!s.ok()) {
      spdlog::error("ledger.refused seq={} kind={} code={} error={}", seq, req.kind(),
                    absl::StatusCodeToString(s.code()), LogValue(s.message()));
      absl::StatusOr<Statement> keep = db_->Prepare("INSERT INTO refused (seq, request, reason) VALUES (?, ?, ?)");
      if (!keep.ok() || !keep->Bind(1, seq).BindBlob(2, blob).Bind(3, s.message()).Run().ok()) return delivered;
    }
    absl::StatusOr<Statement> del = db_->Prepare("DELETE FROM spool WHERE seq = ?");
    if (!del.ok() || !del->Bind(1, seq).Run().ok() || !tx.Commit().ok()) return delivered;
    if (s.ok()) ++delivered;
  }
}

void LedgerOutbox::StartDelivery(absl::Duration retry) {
  delivery_ = std::thread([this, retry] {
    while (true) {
      DeliverOnce();
      absl::MutexLock l(&wake_mu_);
      wake_mu_.AwaitWithTimeout(absl::Condition(this, &LedgerOutbox::Woken), retry);
      if (stopping_) return;
      pending_ = false;
    }
  });
}

}  // namespace ppn
