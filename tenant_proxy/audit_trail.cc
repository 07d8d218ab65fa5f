#include "tenant_proxy/audit_trail.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace ppn::proxy {
namespace {

std::string Rfc3339(absl::Time t) { return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone()); }

}  // namespace

ppn::ledger::v1::Outcome OutcomeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return ppn::ledger::v1::OUTCOME_SUCCESS;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kResourceExhausted: return ppn::ledger::v1::OUTCOME_DENIED;
    default: return ppn::ledger::v1::OUTCOME_FAILURE;
  }
}

absl::StatusOr<std::unique_ptr<AuditTrail>> AuditTrail::Open(const std::string& audit_file, const std::string& spool_db,
                                                             Clock* clock, LedgerAppendFn append,
                                                             AuditOptions options) {
  int fd = open(audit_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot open audit file ", audit_file));
  absl::StatusOr<std::unique_ptr<LedgerOutbox>> outbox = LedgerOutbox::Open(spool_db, "audit", std::move(append));
  if (!outbox.ok()) {
    close(fd);
    return outbox.status();
  }
  return std::unique_ptr<AuditTrail>(new AuditTrail(fd, *std::move(outbox), clock, options));
}

AuditTrail::~AuditTrail() {
  {
    absl::MutexLock l(&flusher_mu_);
    stopping_ = true;
  }
  if (flusher_.joinable()) flusher_.join();
  absl::StatusOr<int> flushed = FlushRateLimited(/*all=*/true);
  if (!flushed.ok()) spdlog::error("audit.rate_limit_lost error=\"{}\"", std::string(flushed.status().message()));
  close(fd_);
}

absl::Status AuditTrail::Record(const AuditRecord& r) {
  absl::Time now = clock_->Now();
  nlohmann::json line = {
      {"time", Rfc3339(now)},
      {"tenant", r.tenant_id},
      {"operation", r.operation},
      {"vm_id", r.vm_id},
      {"outcome", ppn::ledger::v1::Outcome_Name(r.outcome)},
      {"detail", r.detail},
      {"token_id", r.token_id},
  };
  ppn::ledger::v1::AppendRequest req;
  req.set_kind(r.operation);
  req.set_tenant_id(r.tenant_id);
  req.set_subject(r.vm_id);
  req.set_outcome(r.outcome);
  auto& attributes = *req.mutable_attributes();
  attributes["detail"] = r.detail;
  attributes["token_id"] = r.token_id;
  attributes["proxy_time"] = Rfc3339(now);
  if (!r.request_id.empty()) {
    line["request_id"] = r.request_id;
    attributes["request_id"] = r.request_id;
  }
  if (!r.display_name.empty()) {
    line["display_name"] = r.display_name;
    attributes["display_name"] = r.display_name;
  }
  if (r.count > 0) {
    line["count"] = r.count;
    attributes["count"] = absl::StrCat(r.count);
  }
  for (const auto& [key, value] : r.attributes) {
    line[key] = value;
    attributes[key] = value;
  }
  std::string text = line.dump() + "\n";
  absl::MutexLock l(&mu_);
  if (write(fd_, text.data(), text.size()) != static_cast<ssize_t>(text.size()) || fdatasync(fd_) != 0) {
    return absl::InternalError("cannot write the audit file");
  }
  return outbox_->Enqueue(req);
}

void AuditTrail::CountRateLimited(const std::string& tenant_id) {
  absl::Time now = clock_->Now();
  absl::MutexLock l(&tally_mu_);
  auto it = open_windows_.find(tenant_id);
  if (it != open_windows_.end() && now - it->second.first >= options_.rate_limit_window) {
    ended_windows_.push_back(std::move(it->second));
    open_windows_.erase(it);
    it = open_windows_.end();
  }
  if (it == open_windows_.end()) it = open_windows_.emplace(tenant_id, Window{tenant_id, now, now, 0}).first;
  it->second.last = now;
  ++it->second.count;
}

absl::StatusOr<int> AuditTrail::FlushRateLimited(bool all) {
  std::vector<Window> due;
  {
    absl::Time now = clock_->Now();
    absl::MutexLock l(&tally_mu_);
    for (auto it = open_windows_.begin(); it != open_windows_.end();) {
      if (all || now - it->second.first >= options_.rate_limit_window) {
        ended_windows_.push_back(std::move(it->second));
        it = open_windows_.erase(it);
      } else {
        ++it;
      }
    }
    due.swap(ended_windows_);
  }
  int written = 0;
  absl::Status failed;
  std::vector<Window> unwritten;
  for (Window& w : due) {
    AuditRecord r;
    r.tenant_id = w.tenant_id;
    r.operation = kRateLimitKind;
    r.outcome = ppn::ledger::v1::OUTCOME_DENIED;
    r.detail = absl::StrCat("the rate limit refused ", w.count, w.count == 1 ? " call" : " calls", " from ",
                            Rfc3339(w.first), " to ", Rfc3339(w.last));
    r.count = w.count;
    absl::Status s = failed.ok() ? Record(r) : failed;
    if (s.ok()) {
      ++written;
    } else {
      failed = s;
      unwritten.push_back(std::move(w));
    }
  }
  if (!unwritten.empty()) {
    absl::MutexLock l(&tally_mu_);
    ended_windows_.insert(ended_windows_.begin(), unwritten.begin(), unwritten.end());
  }
  if (!failed.ok()) return failed;
  return written;
}

int64_t AuditTrail::Pending() { return outbox_->Pending(); }

int AuditTrail::DeliverOnce() { return outbox_->DeliverOnce(); }

void AuditTrail::StartDelivery(absl::Duration retry) {
  outbox_->StartDelivery(retry);
  absl::Duration every = std::min(absl::Seconds(1), options_.rate_limit_window);
  flusher_ = std::thread([this, every] {
    absl::MutexLock l(&flusher_mu_);
    while (!flusher_mu_.AwaitWithTimeout(absl::Condition(this, &AuditTrail::Stopping), every)) {
      flusher_mu_.Unlock();
      absl::StatusOr<int> flushed = FlushRateLimited();
      if (!flushed.ok()) spdlog::error("audit.failed error=\"{}\"", std::string(flushed.status().message()));
      flusher_mu_.Lock();
    }
  });
}

}  // namespace ppn::proxy
