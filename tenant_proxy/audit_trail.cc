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
  absl::StatusOr<std::unique_ptr<LedgerOutbox>> outbox = LedgerOutbox::Open(spool_db, "audit", std::move(append));
  if (!outbox.ok()) {
    close(fd);
    return outbox.status();
  }
  return std::unique_ptr<AuditTrail>(new AuditTrail(fd, *std::move(outbox), clock));
}

AuditTrail::~AuditTrail() { close(fd_); }

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
  return outbox_->Enqueue(req);
}

int64_t AuditTrail::Pending() { return outbox_->Pending(); }

int AuditTrail::DeliverOnce() { return outbox_->DeliverOnce(); }

void AuditTrail::StartDelivery(absl::Duration retry) { outbox_->StartDelivery(retry); }

}  // namespace ppn::proxy
