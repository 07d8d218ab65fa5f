#pragma once

// The QMP side of live migration, apart from any VM bookkeeping: run an outgoing migration to
// its end, read where an incoming one is, and continue a paused guest. Each function uses the
// QmpClient it is given for the length of the call (one caller at a time, as QmpClient says).

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "host_agent/qmp_client.h"
#include "nlohmann/json.hpp"
#include "ppn/types/v1/types.pb.h"

namespace ppn::host {

// Progress reports of a migration; returning false asks to cancel it.
using ProgressFn = std::function<bool(const ppn::types::v1::MigrationProgress&)>;

struct OutgoingMigration {
  std::string uri;           // "tcp:HOST:PORT" for QEMU to connect to itself; unused with `fd`
  int fd = -1;               // a connection to the target the agent made (ConnectMigration); QEMU takes it over
  std::string tls_creds;     // QEMU's TLS credentials object for the stream ("tls-client"); empty: none
  std::string tls_hostname;  // the target's name, checked against its certificate
  uint64_t max_bandwidth_mib_per_second = 0;  // 0: unlimited
  absl::Duration time_limit = absl::Minutes(10);
  absl::Duration poll_interval = absl::Milliseconds(100);
  absl::Duration settle_timeout = absl::Seconds(5);  // for QEMU to finish a cancel
};

// Migrates memory and the disk overlay (block-incremental: the target has the same base
// image) and follows query-migrate, reporting progress built on `base` (ids filled in). The
// result is the final report and says what is true: COMPLETED when QEMU completed the
// migration (even after a cancel came too late), FAILED with the reason otherwise; after a
// cancel (by `progress` or the time limit) QEMU is given `settle_timeout` to stop it.
ppn::types::v1::MigrationProgress MigrateOverQmp(QmpClient* qmp, const OutgoingMigration& migration,
                                                 const ppn::types::v1::MigrationProgress& base, Clock* clock,
                                                 const ProgressFn& progress);

// The report for one query-migrate answer `info` of a migration under way. Pure.
ppn::types::v1::MigrationProgress ProgressFromQueryMigrate(const nlohmann::json& info,
                                                           const ppn::types::v1::MigrationProgress& base,
                                                           absl::Time now);

// Starts the incoming migration of a QEMU started with `-incoming defer` on connection `fd`
// (the caller keeps and closes its copy). With `tls_creds` ("tls-server") the stream is TLS and
// only a peer certificate whose subject is `source_identity` ("CN=laptop-a") is accepted.
absl::Status StartIncomingOnFd(QmpClient* qmp, int fd, const std::string& tls_creds,
                               const std::string& source_identity);

// QEMU's run state: "running", "paused", "postmigrate", "inmigrate", ...
absl::StatusOr<std::string> QueryRunState(QmpClient* qmp);
// The status of the migration QEMU knows about ("active", "completed", "failed", ...), or ""
// when there has been none.
absl::StatusOr<std::string> QueryMigrationStatus(QmpClient* qmp);

// Where an incoming migration is: kWaiting until a source connects, kReceiving while it
// streams, kRunning once the guest runs here, kFailed if QEMU gave up.
enum class IncomingState { kWaiting, kReceiving, kRunning, kFailed };
absl::StatusOr<IncomingState> QueryIncoming(QmpClient* qmp);

// True if QEMU's state `run_state` is a paused guest that `cont` continues.
bool IsPaused(const std::string& run_state);
// `cont` if the guest is paused (also a copy left paused by a completed outgoing migration).
// Returns the run state found before; FAILED_PRECONDITION if it is neither paused nor running.
absl::StatusOr<std::string> ContinueIfPaused(QmpClient* qmp);

}  // namespace ppn::host
