#include "host_agent/qmp_migration.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"

namespace ppn::host {
namespace {

using ppn::types::v1::MigrationProgress;

bool IsTerminal(const std::string& status) {
  return status == "completed" || status == "failed" || status == "cancelled";
}

MigrationProgress Completed(const nlohmann::json& info, const MigrationProgress& base, absl::Time now) {
  MigrationProgress report = base;
  report.set_phase(ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  const nlohmann::json ram = info.value("ram", nlohmann::json::object());
  const nlohmann::json disk = info.value("disk", nlohmann::json::object());
  report.set_transferred_bytes(ram.value("transferred", uint64_t{0}) + disk.value("transferred", uint64_t{0}));
  report.set_remaining_bytes(0);
  *report.mutable_total_time() = ToProtoDuration(absl::Milliseconds(info.value("total-time", int64_t{0})));
  *report.mutable_downtime() = ToProtoDuration(absl::Milliseconds(info.value("downtime", int64_t{0})));
  *report.mutable_report_time() = ToProtoTimestamp(now);
  return report;
}

MigrationProgress Failed(const std::string& why, const MigrationProgress& base, absl::Time now) {
  MigrationProgress report = base;
  report.set_phase(ppn::types::v1::MIGRATION_PHASE_FAILED);
  report.set_message(why);
  *report.mutable_report_time() = ToProtoTimestamp(now);
  return report;
}

}  // namespace

MigrationProgress ProgressFromQueryMigrate(const nlohmann::json& info, const MigrationProgress& base, absl::Time now) {
  MigrationProgress report = base;
  std::string status = info.value("status", "");
  const nlohmann::json ram = info.value("ram", nlohmann::json::object());
  const nlohmann::json disk = info.value("disk", nlohmann::json::object());
  uint64_t disk_remaining = disk.value("remaining", uint64_t{0});
  bool in_disk = disk_remaining > 0 && ram.value("transferred", uint64_t{0}) == 0;
  report.set_phase(status == "device" || status == "pre-switchover" ? ppn::types::v1::MIGRATION_PHASE_SWITCHOVER
                   : in_disk                                        ? ppn::types::v1::MIGRATION_PHASE_DISK
                                                                    : ppn::types::v1::MIGRATION_PHASE_MEMORY);
  report.set_transferred_bytes(ram.value("transferred", uint64_t{0}) + disk.value("transferred", uint64_t{0}));
  report.set_remaining_bytes(ram.value("remaining", uint64_t{0}) + disk_remaining);
  report.set_total_bytes(in_disk ? disk.value("total", uint64_t{0}) : ram.value("total", uint64_t{0}));
  double mbps = ram.value("mbps", 0.0);
  if (mbps > 0) {
    *report.mutable_eta() =
        ToProtoDuration(absl::Milliseconds(static_cast<int64_t>(report.remaining_bytes() * 8 / (mbps * 1000))));
  }
  *report.mutable_report_time() = ToProtoTimestamp(now);
  return report;
}

MigrationProgress MigrateOverQmp(QmpClient* qmp, const OutgoingMigration& migration, const MigrationProgress& base,
                                 Clock* clock, const ProgressFn& progress) {
  uint64_t bandwidth =
      migration.max_bandwidth_mib_per_second != 0 ? migration.max_bandwidth_mib_per_second << 20 : uint64_t{1} << 40;
  nlohmann::json parameters = {{"block-incremental", true}, {"max-bandwidth", bandwidth}, {"downtime-limit", 100}};
  std::string uri = migration.uri;
  if (migration.fd >= 0) {
    // The agent made the connection; QEMU takes it over and speaks TLS on it as the client,
    // checking that the target presents the certificate of `tls_hostname`.
    absl::StatusOr<nlohmann::json> r = qmp->ExecuteWithFd("getfd", {{"fdname", "ppn-migration"}}, migration.fd);
    if (!r.ok()) return Failed(std::string(r.status().message()), base, clock->Now());
    uri = "fd:ppn-migration";
  }
  if (!migration.tls_creds.empty()) {
    parameters["tls-creds"] = migration.tls_creds;
    parameters["tls-hostname"] = migration.tls_hostname;
  }
  for (auto [cmd, args] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"migrate-set-capabilities", {{"capabilities", {{{"capability", "block"}, {"state", true}}}}}},
           {"migrate-set-parameters", parameters},
           {"migrate", {{"uri", uri}}}}) {
    absl::StatusOr<nlohmann::json> r = qmp->Execute(cmd, args);
    if (!r.ok()) return Failed(std::string(r.status().message()), base, clock->Now());
  }
  absl::Time deadline = clock->Now() + migration.time_limit;
  std::string why;
  while (true) {
    absl::StatusOr<nlohmann::json> info = qmp->Execute("query-migrate");
    if (!info.ok()) return Failed(std::string(info.status().message()), base, clock->Now());
    std::string status = info->value("status", "");
    if (status == "completed") return Completed(*info, base, clock->Now());
    if (status == "failed" || status == "cancelled") {
      return Failed(info->value("error-desc", "migration " + status), base, clock->Now());
    }
    if (!progress(ProgressFromQueryMigrate(*info, base, clock->Now()))) {
      why = "cancelled by the caller";
      break;
    }
    if (clock->Now() > deadline) {
      why = absl::StrCat("migration did not finish within ", absl::FormatDuration(migration.time_limit));
      break;
    }
    absl::SleepFor(migration.poll_interval);
  }
  // A cancel can come too late: what QEMU ends with decides what happened.
  qmp->Execute("migrate_cancel").IgnoreError();
  absl::Time settle = absl::Now() + migration.settle_timeout;
  while (absl::Now() < settle) {
    absl::StatusOr<nlohmann::json> info = qmp->Execute("query-migrate");
    if (!info.ok()) break;
    std::string status = info->value("status", "");
    if (status == "completed") return Completed(*info, base, clock->Now());
    if (IsTerminal(status)) break;
    absl::SleepFor(std::min(migration.poll_interval, absl::Milliseconds(50)));
  }
  return Failed(why, base, clock->Now());
}

absl::Status StartIncomingOnFd(QmpClient* qmp, int fd, const std::string& tls_creds,
                               const std::string& source_identity) {
  nlohmann::json parameters = nlohmann::json::object();
  if (!tls_creds.empty()) {
    // Only the source node's certificate may send this VM (its subject, as GnuTLS writes it).
    PPN_RETURN_IF_ERROR(
        qmp->Execute("object-add",
                     {{"qom-type", "authz-simple"}, {"id", "ppn-migration-source"}, {"identity", source_identity}})
            .status());
    parameters = {{"tls-creds", tls_creds}, {"tls-authz", "ppn-migration-source"}};
  }
  PPN_RETURN_IF_ERROR(qmp->Execute("migrate-set-parameters", parameters).status());
  PPN_RETURN_IF_ERROR(qmp->ExecuteWithFd("getfd", {{"fdname", "ppn-migration"}}, fd).status());
  return qmp->Execute("migrate-incoming", {{"uri", "fd:ppn-migration"}}).status();
}

absl::StatusOr<std::string> QueryRunState(QmpClient* qmp) {
  PPN_ASSIGN_OR_RETURN(nlohmann::json st, qmp->Execute("query-status"));
  return st.value("status", "");
}

absl::StatusOr<std::string> QueryMigrationStatus(QmpClient* qmp) {
  PPN_ASSIGN_OR_RETURN(nlohmann::json info, qmp->Execute("query-migrate"));
  return info.value("status", "");
}

absl::StatusOr<IncomingState> QueryIncoming(QmpClient* qmp) {
  PPN_ASSIGN_OR_RETURN(std::string run_state, QueryRunState(qmp));
  if (run_state == "running") return IncomingState::kRunning;
  PPN_ASSIGN_OR_RETURN(std::string status, QueryMigrationStatus(qmp));
  // QEMU reports no status on the target until a source connects.
  if (status.empty() || status == "none") return IncomingState::kWaiting;
  if (status == "failed" || status == "cancelled") return IncomingState::kFailed;
  return IncomingState::kReceiving;
}

bool IsPaused(const std::string& run_state) { return run_state == "paused" || run_state == "postmigrate"; }

absl::StatusOr<std::string> ContinueIfPaused(QmpClient* qmp) {
  PPN_ASSIGN_OR_RETURN(std::string run_state, QueryRunState(qmp));
  if (run_state == "running") return run_state;
  if (!IsPaused(run_state)) {
    return absl::FailedPreconditionError(absl::StrCat("QEMU is ", run_state, ", not paused"));
  }
  PPN_RETURN_IF_ERROR(qmp->Execute("cont").status());
  return run_state;
}

}  // namespace ppn::host
