#include "scheduler/migrator.h"

#include <algorithm>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "spdlog/spdlog.h"

namespace ppn::scheduler {
namespace {

using ppn::host::v1::VmInstance;
using ppn::types::v1::MIGRATION_PHASE_COMPLETED;
using ppn::types::v1::MIGRATION_PHASE_FAILED;
using ppn::types::v1::MIGRATION_PHASE_PREPARING;

// The ledger takes 4 KiB of attributes per entry; a reason is kept well within it.
constexpr size_t kMaxReasonBytes = 1024;

// A status the source answers before it starts sending anything: the stream never began, so
// the target cannot have received any of the guest.
bool RefusedBeforeStart(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnimplemented: return true;
    default: return false;
  }
}

// What RecordMigration cannot fix by being asked again.
bool Permanent(absl::StatusCode code) {
  return code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kPermissionDenied ||
         code == absl::StatusCode::kUnauthenticated;
}

std::optional<VmInstance> Find(const std::vector<VmInstance>& vms, const VmId& vm) {
  for (const VmInstance& v : vms) {
    if (v.vm_id() == vm.value()) return v;
  }
  return std::nullopt;
}

int64_t Millis(const google::protobuf::Duration& d) {
  absl::Duration out;
  return ToAbslDuration(d, "", &out).ok() ? absl::ToInt64Milliseconds(out) : 0;
}

}  // namespace

struct Migrator::Attempt {
  ppn::fleet::v1::VmRecord vm;
  VmId id;
  NodeId source;
  NodeId target;
  AgentPeer* source_agent = nullptr;
  AgentPeer* target_agent = nullptr;
  MigrationProgress report;  // the running report: ids, phase, message, time
};

Migrator::Migrator(Deps deps, Options options) : deps_(std::move(deps)), options_(options) {}

absl::StatusOr<MigrationProgress> Migrator::Migrate(const MigrationRequest& request, const ProgressFn& progress) {
  PPN_ASSIGN_OR_RETURN(ppn::fleet::v1::VmRecord vm, deps_.fleet->GetVm(request.vm));
  if (!vm.pinned_node_id().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", vm.vm_id(), " is pinned to node ", vm.pinned_node_id(), "; unpin it to move it"));
  }
  if (vm.state() != ppn::types::v1::VM_STATE_RUNNING) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", vm.vm_id(), " is ", ppn::types::v1::VmState_Name(vm.state()), ", not running"));
  }
  PPN_ASSIGN_OR_RETURN(std::vector<ppn::fleet::v1::Node> nodes, deps_.fleet->ListNodes());
  std::map<std::string, ppn::fleet::v1::Node> by_id;
  for (const auto& n : nodes) by_id[n.node_id()] = n;
  NodeId target = request.target;
  if (target.empty()) {
    PPN_ASSIGN_OR_RETURN(ppn::fleet::v1::PlacementDecision decision,
                         deps_.fleet->ExplainPlacement(vm.spec(), {NodeId(vm.node_id())}));
    if (decision.chosen_node_id().empty()) {
      std::string why;
      for (const auto& v : decision.verdicts())
        absl::StrAppend(&why, why.empty() ? "" : "; ", v.node_id(), ": ", v.reason());
      return absl::ResourceExhaustedError(absl::StrCat("no node can take vm ", vm.vm_id(), ": ", why));
    }
    target = NodeId(decision.chosen_node_id());
  } else {
    auto it = by_id.find(target.value());
    if (it == by_id.end()) return absl::InvalidArgumentError(absl::StrCat("unknown node ", target.value()));
    if (target.value() == vm.node_id())
      return absl::InvalidArgumentError(absl::StrCat("vm ", vm.vm_id(), " is already on ", target.value()));
    if (it->second.state() == ppn::fleet::v1::NODE_STATE_REVOKED) {
      return absl::FailedPreconditionError(absl::StrCat("node ", target.value(), " is revoked"));
    }
    if (it->second.cordoned()) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", target.value(), " is cordoned; uncordon it first to move a VM there"));
    }
    if (it->second.state() != ppn::fleet::v1::NODE_STATE_ALIVE) {
      return absl::UnavailableError(absl::StrCat("node ", target.value(), " is not alive"));
    }
  }
  if (by_id.count(vm.node_id()) == 0) return absl::FailedPreconditionError("the VM's node is unknown");
  if (by_id.count(target.value()) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("placement chose unknown node ", target.value()));
  }
  {
    absl::MutexLock l(&mu_);
    if (!in_flight_.insert(request.vm).second) {
      return absl::AbortedError(absl::StrCat("vm ", vm.vm_id(), " is already being migrated"));
    }
  }
  Attempt a;
  a.id = request.vm;
  a.source = NodeId(vm.node_id());
  a.target = target;
  a.source_agent = deps_.agents->ForNode(a.source, by_id[a.source.value()].agent_address());
  a.target_agent = deps_.agents->ForNode(a.target, by_id[a.target.value()].agent_address());
  a.vm = std::move(vm);
  absl::StatusOr<MigrationProgress> result = Run(a, request, progress);
  absl::MutexLock l(&mu_);
  in_flight_.erase(request.vm);
  return result;
}

absl::StatusOr<MigrationProgress> Migrator::Run(Attempt& a, const MigrationRequest& request,
                                                const ProgressFn& progress) {
  a.report.set_vm_id(a.id.value());
  a.report.set_source_node_id(a.source.value());
  a.report.set_target_node_id(a.target.value());
  a.report.set_phase(MIGRATION_PHASE_PREPARING);
  a.report.set_message(absl::StrCat("preparing ", a.target.value()));
  *a.report.mutable_report_time() = ToProtoTimestamp(deps_.clock->Now());
  progress(a.report);
  spdlog::info("migration.started vm={} from={} to={}", a.id.value(), a.source.value(), a.target.value());

  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> prepared = Prepare(a);
  if (!prepared.ok()) {
    std::string why = absl::StrCat("target ", a.target.value(), " could not prepare: ", prepared.status().message());
    VmInstance running;
    Verdict there = AwaitTarget(a, absl::ZeroDuration(), false, &running);
    // ALREADY_EXISTS: the target holds a copy this attempt did not make. Only a dead one (left
    // by an earlier attempt) is ours to remove; one receiving a stream, or running, is not.
    bool theirs = prepared.status().code() == absl::StatusCode::kAlreadyExists && there != Verdict::kGone;
    if (there == Verdict::kRuns || theirs) return Failed(a, why);
    return NotMoved(a, why, /*source_sent=*/false);
  }

  int reports = 0;
  OutgoingMigration out{a.id,
                        a.target,
                        prepared->migration_uri(),
                        prepared->disk_nbd_uri(),
                        request.max_bandwidth_mib_per_second,
                        prepared->migration_ticket()};
  absl::StatusOr<MigrationProgress> last = a.source_agent->MigrateOut(out, [&](const MigrationProgress& p) {
    ++reports;
    return progress(p);
  });
  VmInstance running;
  auto ports_there = [&]() -> const Ports& {
    return running.forwarded_ports_size() > 0 ? running.forwarded_ports() : prepared->forwarded_ports();
  };
  if (last.ok() && last->phase() == MIGRATION_PHASE_COMPLETED) {
    // The target resumes the guest on its own; wait until it says so before recording the move.
    Verdict v = AwaitTarget(a, options_.settle_timeout, true, &running);
    if (v == Verdict::kGone) {
      return NotMoved(a, absl::StrCat("the source sent the guest but target ", a.target.value(), " does not run it"),
                      /*source_sent=*/true);
    }
    return Moved(a, *last, ports_there(), "");
  }
  if (last.ok()) {
    // The source itself says the migration failed: the target never got the whole guest. One
    // look is enough, and only to catch a target that runs it anyway.
    if (AwaitTarget(a, absl::ZeroDuration(), false, &running) == Verdict::kRuns) {
      RetireSourceCopy(a);
      return Moved(a, *last, ports_there(), absl::StrCat(" (the source reported: ", last->message(), ")"));
    }
    return NotMoved(a, last->message(), /*source_sent=*/true);
  }
  std::string why = absl::StrCat("source ", a.source.value(), ": ", last.status().message());
  if (reports == 0 && RefusedBeforeStart(last.status().code())) return NotMoved(a, why, /*source_sent=*/false);
  // The stream broke: the source's QEMU may still be sending, and nothing on the source may
  // cancel it. Only the target can tell what happened.
  switch (AwaitTarget(a, options_.outcome_timeout, true, &running)) {
    case Verdict::kRuns:
      RetireSourceCopy(a);
      return Moved(a, a.report, ports_there(),
                   absl::StrCat(" (the source's stream ended: ", last.status().message(), ")"));
    case Verdict::kGone: return NotMoved(a, why, /*source_sent=*/true);
    case Verdict::kUndecided: break;
  }
  // Neither removing the target's copy nor resuming the source's is safe now: one of them may
  // be the guest. The target removes a copy that never completes; the fleet settles the rest
  // from the nodes' heartbeats.
  return Failed(
      a, absl::StrCat(why, "; outcome unknown: target ", a.target.value(), " did not settle within ",
                      absl::FormatDuration(options_.outcome_timeout), ", both copies left for the fleet to settle"));
}

absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> Migrator::Prepare(Attempt& a) {
  IncomingVm incoming{a.id,     TenantId(a.vm.tenant_id()), a.vm.spec(), a.vm.accelerator(), options_.ready_timeout,
                      a.source, a.vm.private_nics()};
  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> prepared = a.target_agent->PrepareIncoming(incoming);
  if (prepared.status().code() != absl::StatusCode::kAlreadyExists) return prepared;
  // A copy from an earlier attempt (its scheduler crashed, its stream broke) is still there. No
  // migration of this VM runs now (one at a time), so it goes away on its own: its incoming
  // stream fails, or nothing arrives within its ready timeout. Wait for that, then try again.
  VmInstance running;
  if (AwaitTarget(a, options_.ready_timeout + options_.settle_timeout, false, &running) != Verdict::kGone) {
    return prepared;
  }
  spdlog::info("migration.stale_target_gone vm={} node={}", a.id.value(), a.target.value());
  absl::Status removed = a.target_agent->DestroyVm(a.id);  // a FAILED record may linger
  if (!removed.ok() && removed.code() != absl::StatusCode::kNotFound) return prepared;
  return a.target_agent->PrepareIncoming(incoming);
}

Migrator::Verdict Migrator::AwaitTarget(Attempt& a, absl::Duration timeout, bool wait_if_unreachable,
                                        VmInstance* running) {
  const absl::Time deadline = deps_.clock->Now() + timeout;
  while (true) {
    absl::StatusOr<std::vector<VmInstance>> there = a.target_agent->ListVms();
    if (there.ok()) {
      std::optional<VmInstance> copy = Find(*there, a.id);
      if (!copy.has_value() || copy->state() == ppn::types::v1::VM_STATE_FAILED ||
          copy->state() == ppn::types::v1::VM_STATE_STOPPED || copy->state() == ppn::types::v1::VM_STATE_DESTROYED) {
        return Verdict::kGone;
      }
      if (copy->state() == ppn::types::v1::VM_STATE_RUNNING) {
        *running = *copy;
        return Verdict::kRuns;
      }
    } else if (!wait_if_unreachable) {
      return Verdict::kUndecided;
    }
    if (deps_.clock->Now() >= deadline) return Verdict::kUndecided;
    deps_.sleep(options_.poll_interval);
  }
}

MigrationProgress Migrator::NotMoved(Attempt& a, const std::string& why, bool source_sent) {
  absl::Status removed = a.target_agent->DestroyVm(a.id);
  std::string note;
  if (!removed.ok() && removed.code() != absl::StatusCode::kNotFound) {
    note = absl::StrCat("; the target's copy was not removed (", removed.message(), "); it removes itself");
  }
  return Failed(a, absl::StrCat(why, note, source_sent ? ResumeSource(a) : ""));
}

std::string Migrator::ResumeSource(Attempt& a) {
  const absl::Time deadline = deps_.clock->Now() + options_.source_timeout;
  while (true) {
    absl::StatusOr<std::vector<VmInstance>> here = a.source_agent->ListVms();
    if (here.ok()) {
      std::optional<VmInstance> copy = Find(*here, a.id);
      if (!copy.has_value()) return absl::StrCat("; source ", a.source.value(), " no longer has the guest");
      if (copy->migrated_out()) {
        absl::StatusOr<VmInstance> resumed = a.source_agent->ResumeVm(a.id);
        if (!resumed.ok())
          return absl::StrCat("; resuming the source's paused copy failed: ", resumed.status().message());
        spdlog::info("migration.source_resumed vm={} node={}", a.id.value(), a.source.value());
        return absl::StrCat("; the guest runs again on ", a.source.value());
      }
      // MIGRATING without migrated_out: the source is still winding its attempt down.
      if (copy->state() != ppn::types::v1::VM_STATE_MIGRATING) return "";
    }
    if (deps_.clock->Now() >= deadline) {
      return absl::StrCat("; source ", a.source.value(), " did not answer within ",
                          absl::FormatDuration(options_.source_timeout), ": the fleet resumes a paused copy");
    }
    deps_.sleep(options_.poll_interval);
  }
}

void Migrator::RetireSourceCopy(Attempt& a) {
  absl::StatusOr<std::vector<VmInstance>> here = a.source_agent->ListVms();
  if (!here.ok()) return;  // its agent is down: the fleet retires the copy once it reports it
  std::optional<VmInstance> copy = Find(*here, a.id);
  if (!copy.has_value() || !copy->migrated_out()) return;
  absl::Status s = a.source_agent->DestroyVm(a.id);
  spdlog::info("migration.source_retired vm={} node={} ok={}", a.id.value(), a.source.value(), s.ok());
}

MigrationProgress Migrator::Moved(Attempt& a, MigrationProgress last, const Ports& ports, const std::string& note) {
  absl::Status recorded = RecordWithRetry(a, ports);
  last.set_vm_id(a.id.value());
  last.set_source_node_id(a.source.value());
  last.set_target_node_id(a.target.value());
  last.set_phase(MIGRATION_PHASE_COMPLETED);
  *last.mutable_forwarded_ports() = ports;
  *last.mutable_report_time() = ToProtoTimestamp(deps_.clock->Now());
  AppendToLedger(a, last, /*succeeded=*/true, recorded.ok());
  if (!recorded.ok()) {
    spdlog::error("migration.unrecorded vm={} to={} error={}", a.id.value(), a.target.value(),
                  LogValue(recorded.message()));
  }
  last.set_message(
      absl::StrCat("running on ", a.target.value(), note,
                   recorded.ok() ? "" : absl::StrCat(" (not in the fleet's record yet: ", recorded.message(), ")")));
  spdlog::info("migration.completed vm={} from={} to={} total_ms={} downtime_ms={}", a.id.value(), a.source.value(),
               a.target.value(), Millis(last.total_time()), Millis(last.downtime()));
  return last;
}

absl::Status Migrator::RecordWithRetry(Attempt& a, const Ports& ports) {
  const absl::Time deadline = deps_.clock->Now() + options_.record_timeout;
  absl::Duration backoff = options_.record_backoff;
  while (true) {
    absl::StatusOr<ppn::fleet::v1::VmRecord> r = deps_.fleet->RecordMigration(a.id, a.source, a.target, ports);
    if (r.ok()) return absl::OkStatus();
    if (r.status().code() == absl::StatusCode::kAborted) {
      // The record moved already: an earlier try that landed unacknowledged, or the fleet
      // adopting the VM from the target's heartbeat.
      absl::StatusOr<ppn::fleet::v1::VmRecord> now = deps_.fleet->GetVm(a.id);
      if (now.ok() && now->node_id() == a.target.value()) return absl::OkStatus();
      if (now.ok()) return r.status();
    } else if (Permanent(r.status().code())) {
      return r.status();
    }
    if (deps_.clock->Now() + backoff > deadline) return r.status();
    spdlog::warn("migration.record_retry vm={} in_ms={} error={}", a.id.value(), absl::ToInt64Milliseconds(backoff),
                 LogValue(r.status().message()));
    deps_.sleep(backoff);
    backoff = std::min(backoff * 2, options_.record_max_backoff);
  }
}

MigrationProgress Migrator::Failed(Attempt& a, const std::string& why) {
  MigrationProgress report = a.report;
  report.set_phase(MIGRATION_PHASE_FAILED);
  report.set_message(why);
  *report.mutable_report_time() = ToProtoTimestamp(deps_.clock->Now());
  spdlog::warn("migration.failed vm={} from={} to={} reason={}", a.id.value(), a.source.value(), a.target.value(),
               LogValue(why));
  AppendToLedger(a, report, /*succeeded=*/false, /*recorded=*/false);
  return report;
}

void Migrator::AppendToLedger(const Attempt& a, const MigrationProgress& report, bool succeeded, bool recorded) {
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind("vm.migrate");
  entry.set_tenant_id(a.vm.tenant_id());
  entry.set_subject(a.id.value());
  entry.set_outcome(succeeded ? ppn::ledger::v1::OUTCOME_SUCCESS : ppn::ledger::v1::OUTCOME_FAILURE);
  auto& attributes = *entry.mutable_attributes();
  attributes["source"] = a.source.value();
  attributes["target"] = a.target.value();
  if (succeeded) {
    attributes["total_ms"] = absl::StrCat(Millis(report.total_time()));
    attributes["downtime_ms"] = absl::StrCat(Millis(report.downtime()));
    attributes["bytes"] = absl::StrCat(report.transferred_bytes());
    attributes["fleet_recorded"] = recorded ? "true" : "false";
  } else {
    attributes["reason"] = report.message().substr(0, kMaxReasonBytes);
  }
  absl::Status s = deps_.ledger->Append(entry);
  if (!s.ok()) spdlog::error("migration.not_in_ledger vm={} error={}", a.id.value(), LogValue(s.message()));
  metrics::Default().CounterAdd("ppn_scheduler_migrations_total", "Live migrations ended, by outcome.",
                                {{"outcome", succeeded ? "success" : "failure"}});
  if (succeeded) {
    metrics::Default().Observe("ppn_scheduler_migration_seconds", "Total time of successful live migrations.", {},
                               Millis(report.total_time()) / 1000.0);
    metrics::Default().Observe("ppn_scheduler_migration_downtime_seconds", "Guest downtime of successful migrations.",
                               {}, Millis(report.downtime()) / 1000.0,
                               {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
  }
}

}  // namespace ppn::scheduler
