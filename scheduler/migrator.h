#pragma once

// Migrator carries out one live migration from start to finish against the scheduler's peers:
// checks the VM, picks the target (the fleet's placement when none is named), prepares the
// target, streams the source's MigrateOut, and settles the outcome:
//   - completed: waits for the target to run the guest, records the move in the fleet
//     (retried with backoff until it lands, within a bound) and appends `vm.migrate`;
//   - failed: never removes the target's copy on the strength of one look. When the source
//     says the migration failed, the target cannot have the guest; when the stream broke
//     (the source's agent died, the network went), the target is asked until it says: RUNNING
//     means the move happened (recorded as such), MIGRATING means wait, nothing or FAILED
//     means clean it up. Then a copy the source left paused after sending (`migrated_out`)
//     is resumed unless the target runs the guest. `vm.migrate` records the failure.
// At most one migration per VM at a time in this scheduler. Thread-safe; the peers, clock and
// ledger must outlive it.

#include <functional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/ids.h"
#include "scheduler/peers.h"

namespace ppn::scheduler {

struct MigrationRequest {
  VmId vm;
  NodeId target;  // empty: the fleet's placement chooses
  uint64_t max_bandwidth_mib_per_second = 0;
};

class Migrator {
 public:
  struct Options {
    // Asked of the target: it removes itself if no stream starts by then.
    absl::Duration ready_timeout = absl::Seconds(30);
    // After COMPLETED, how long to wait for the target to report the guest RUNNING.
    absl::Duration settle_timeout = absl::Seconds(10);
    // After a broken stream, how long to wait for the target to say whether it has the guest.
    absl::Duration outcome_timeout = absl::Minutes(5);
    // After a failure, how long to wait for the source to answer (its agent may be
    // restarting) before resuming a paused copy is left to the fleet.
    absl::Duration source_timeout = absl::Seconds(15);
    absl::Duration poll_interval = absl::Milliseconds(250);
    // RecordMigration is retried with backoff (doubling up to record_max_backoff) for this long.
    absl::Duration record_timeout = absl::Minutes(3);
    absl::Duration record_backoff = absl::Milliseconds(250);
    absl::Duration record_max_backoff = absl::Seconds(5);
  };
  struct Deps {
    FleetPeer* fleet = nullptr;
    AgentPeers* agents = nullptr;
    LedgerPeer* ledger = nullptr;
    Clock* clock = nullptr;
    // Waits this long (absl::SleepFor in production; tests advance a fake clock).
    std::function<void(absl::Duration)> sleep;
  };

  Migrator(Deps deps, Options options);

  // One migration, reporting to `progress`. The final report, returned, is COMPLETED or
  // FAILED. An error means it never started: NOT_FOUND (no such VM), FAILED_PRECONDITION
  // (pinned, not running, its node unknown, target revoked), INVALID_ARGUMENT (unknown target
  // or its own node), RESOURCE_EXHAUSTED (no node can take it), UNAVAILABLE (the fleet, or
  // the named target is not alive), ABORTED (a migration of this VM is already under way).
  absl::StatusOr<MigrationProgress> Migrate(const MigrationRequest& request, const ProgressFn& progress);

 private:
  struct Attempt;
  enum class Verdict { kRuns, kGone, kUndecided };

  absl::StatusOr<MigrationProgress> Run(Attempt& a, const MigrationRequest& request, const ProgressFn& progress);
  // PrepareIncoming on the target; a copy an earlier attempt left there (ALREADY_EXISTS) is
  // waited out, and the target asked again once it is gone.
  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> Prepare(Attempt& a);
  // Polls the target until it runs the guest, has none (or a FAILED copy), or `timeout`
  // passes; while `wait_if_unreachable`, an unanswered poll waits too. `*running` gets the
  // instance when it runs.
  Verdict AwaitTarget(Attempt& a, absl::Duration timeout, bool wait_if_unreachable, ppn::host::v1::VmInstance* running);
  // The guest did not move: removes the target's copy and, once the source has sent anything
  // (`source_sent`), resumes a copy it left paused. Returns the FAILED report.
  MigrationProgress NotMoved(Attempt& a, const std::string& why, bool source_sent);
  // The target runs the guest: removes a paused `migrated_out` copy the source still holds, if
  // its agent answers now (otherwise the fleet does, once the source reports it).
  void RetireSourceCopy(Attempt& a);
  // Resumes the source's paused `migrated_out` copy; returns a note for the report.
  std::string ResumeSource(Attempt& a);
  // The guest runs on the target: records it (retrying), appends the ledger entry and returns
  // the COMPLETED report built from `last`.
  MigrationProgress Moved(Attempt& a, MigrationProgress last, const Ports& ports, const std::string& note);
  absl::Status RecordWithRetry(Attempt& a, const Ports& ports);
  MigrationProgress Failed(Attempt& a, const std::string& why);
  void AppendToLedger(const Attempt& a, const MigrationProgress& report, bool succeeded, bool recorded);

  const Deps deps_;
  const Options options_;
  absl::Mutex mu_;
  std::set<VmId> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::scheduler
