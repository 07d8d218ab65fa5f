#include "tenant_proxy/audit_trail.h"

#include <fcntl.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace ppn::proxy {

absl::StatusOr<std::unique_ptr<AuditTrail>> AuditTrail::Open(const std::string& audit_file, const std::string& spool_db,
                                                             Clock* clock, LedgerAppendFn append) {
  int fd = open(audit_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot open audit file ", audit_file));
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(spool_db);
  if (db.ok()) {
    absl::Status s =
        (*db)->Migrate({"CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, request BLOB NOT NULL)"});
    if (!s.ok()) db = s;
  }
  if (!db.ok()) {
    close(fd);
    return db.status();
  }
  return std::unique_ptr<AuditTrail>(new AuditTrail(fd, *std::move(db), clock, std::move(append)));
}

AuditTrail::~AuditTrail() {
  {
    absl::MutexLock l(&stop_mu_);
    stopping_ = true;
  }
  if (delivery_.joinable()) delivery_.join();
  close(fd_);
}

absl::Status AuditTrail::Record(const AuditRecord& r) {
  absl::Time now = clock_->Now();
  nlohmann::json line = {
      {"time", absl::FormatTime(absl::RFC3339_full, now, absl::UTCTimeZone())},
      {"tenant", r.tenant_id},
      {"operation", r.operation},
      {"vm_id", r.vm_id},
      {"outcome", ppn::ledger::v1::Outcome_Name(r.outcome)},
      {"detail", r.detail},
      {"token_id", r.token_id},
  };
  std::string text = line.dump() + "\n";
  ppn::ledger::v1::AppendRequest req;
  req.set_kind(r.operation);
  req.set_tenant_id(r.tenant_id);
  req.set_subject(r.vm_id);
  req.set_outcome(r.outcome);
  (*req.mutable_attributes())["detail"] = r.detail;
  (*req.mutable_attributes())["token_id"] = r.token_id;
  (*req.mutable_attributes())["proxy_time"] = absl::FormatTime(absl::RFC3339_full, now, absl::UTCTimeZone());
  absl::MutexLock l(&mu_);
  if (write(fd_, text.data(), text.size()) != static_cast<ssize_t>(text.size()) || fdatasync(fd_) != 0) {
    return absl::InternalError("cannot write the audit file");
  }
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("INSERT INTO spool (request) VALUES (?)"));
  return stmt.BindBlob(1, req.SerializeAsString()).Run();
}

int64_t AuditTrail::Pending() {
  absl::MutexLock l(&mu_);
  absl::StatusOr<Statement> stmt = db_->Prepare("SELECT COUNT(*) FROM spool");
  if (!stmt.ok() || !stmt->Step().value_or(false)) return -1;
  return stmt->ColumnInt(0);
}

int AuditTrail::DeliverOnce() {
  int delivered = 0;
  while (true) {
    int64_t seq;
    ppn::ledger::v1::AppendRequest req;
    {
      absl::MutexLock l(&mu_);
      absl::StatusOr<Statement> stmt = db_->Prepare("SELECT seq, request FROM spool ORDER BY seq LIMIT 1");
      if (!stmt.ok() || !stmt->Step().value_or(false)) return delivered;
      seq = stmt->ColumnInt(0);
      req.ParseFromString(stmt->ColumnBlob(1));
    }
    // The sequence makes a redelivery after a lost acknowledgement a no-op in the ledger.
    req.set_idempotency_key(absl::StrCat("audit-", seq));
    absl::Status s = append_(req);
    if (!s.ok()) {
      spdlog::warn("audit.ledger_unavailable pending_from={} code={}", seq, absl::StatusCodeToString(s.code()));
      return delivered;
    }
    absl::MutexLock l(&mu_);
    absl::StatusOr<Statement> del = db_->Prepare("DELETE FROM spool WHERE seq = ?");
    if (!del.ok() || !del->Bind(1, seq).Run().ok()) return delivered;
    ++delivered;
  }
}

void AuditTrail::StartDelivery(absl::Duration retry) {
  delivery_ = std::thread([this, retry] {
    while (true) {
      DeliverOnce();
      absl::MutexLock l(&stop_mu_);
      if (stop_mu_.AwaitWithTimeout(absl::Condition(&stopping_), retry)) return;
    }
  });
}

}  // namespace ppn::proxy
