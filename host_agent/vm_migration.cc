// The migration half of VmManager's state machine: incoming targets (prepared, replaced,
// settled, expired), outgoing migrations and resuming a paused copy.

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/roles.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "google/protobuf/util/time_util.h"
#include "host_agent/vm_manager.h"
#include "spdlog/spdlog.h"

namespace ppn::host {
namespace {

using google::protobuf::util::TimeUtil;  // only on durations QEMU reported, never on wire input
using ppn::host::v1::VmInstance;
using ppn::types::v1::MigrationProgress;

constexpr absl::Duration kQmpTimeout = absl::Seconds(10);
constexpr absl::Duration kMaxReadyTimeout = absl::Hours(1);

}  // namespace

absl::Status VmManager::ReplaceWaitingTarget(Entry* e) {
  std::string vm_id;
  std::shared_ptr<Process> process;
  {
    absl::MutexLock l(&mu_);
    vm_id = e->rec.instance.vm_id();
    process = e->process;
  }
  // A target that has received nothing is only waiting: a retried migration replaces it.
  absl::StatusOr<IncomingState> state = absl::UnavailableError("no QEMU");
  if (process != nullptr && process->Alive()) {
    absl::StatusOr<std::unique_ptr<QmpClient>> qmp = runtime_.Connect(vm_id, process.get(), absl::Seconds(2));
    if (qmp.ok()) state = QueryIncoming(qmp->get());
  }
  if (state.ok() && (*state == IncomingState::kReceiving || *state == IncomingState::kRunning)) {
    return absl::AlreadyExistsError(
        absl::StrCat("vm ", vm_id, " is already receiving a migration on node ", options_.node_id));
  }
  return Remove(e, "replaced by a new PrepareIncoming");
}

absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> VmManager::PrepareIncoming(
    const ppn::host::v1::PrepareIncomingRequest& request) {
  absl::Duration ready_timeout = options_.default_ready_timeout;
  if (request.has_ready_timeout()) {
    absl::Duration d;
    PPN_RETURN_IF_ERROR(ToAbslDuration(request.ready_timeout(), "ready_timeout", &d));
    if (d < absl::ZeroDuration() || d > kMaxReadyTimeout) {
      return absl::InvalidArgumentError("ready_timeout must be between 0 (the default) and 1 hour");
    }
    if (d > absl::ZeroDuration()) ready_timeout = d;
  }
  bool kvm = request.accelerator() == ppn::types::v1::ACCELERATOR_KVM;
  if (kvm && !(kvm_usable_ && options_.kvm_mode == KvmMode::kAuto)) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", request.vm_id(), " runs under KVM but node ", options_.node_id, " has no usable KVM"));
  }
  if (!options_.migration_tls.cert.empty())
    PPN_RETURN_IF_ERROR(ValidateVmId(request.source_node_id()).ok() &&
                                !ppn::roles::IsReservedNodeName(request.source_node_id())
                            ? absl::OkStatus()
                            : absl::InvalidArgumentError("source_node_id must name the source node"));
  PPN_ASSIGN_OR_RETURN(Created created, Create({request.vm_id(), request.tenant_id(), request.spec(), true, kvm,
                                                ready_timeout, request.source_node_id(), request.private_nics()}));
  ppn::host::v1::PrepareIncomingResponse response;
  response.set_migration_uri(absl::StrCat("tcp:", options_.host_address, ":", created.migration_port));
  response.set_migration_ticket(created.migration_ticket);
  *response.mutable_forwarded_ports() = created.vm.forwarded_ports();
  return response;
}

absl::StatusOr<MigrationProgress> VmManager::MigrateOut(const ppn::host::v1::MigrateOutRequest& request,
                                                        const ProgressFn& progress) {
  const std::string& vm_id = request.vm_id();
  if (!absl::StartsWith(request.migration_uri(), "tcp:")) {
    return absl::InvalidArgumentError("migration_uri must be tcp:HOST:PORT from PrepareIncoming");
  }
  if (request.migration_ticket().size() != kMigrationTicketBytes) {
    return absl::InvalidArgumentError("migration_ticket from PrepareIncoming is required");
  }
  // QEMU checks the target's certificate by this name: it must be another node's.
  if (!options_.migration_tls.cert.empty() &&
      (!ValidateVmId(request.target_node_id()).ok() || ppn::roles::IsReservedNodeName(request.target_node_id()) ||
       request.target_node_id() == options_.node_id)) {
    return absl::InvalidArgumentError("target_node_id must name the target node");
  }
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  std::shared_ptr<Process> process;
  {
    absl::MutexLock l(&mu_);
    if (vms_.count(vm_id) == 0 || e->rec.migration_port != 0 ||
        e->rec.instance.state() != ppn::types::v1::VM_STATE_RUNNING) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not running"));
    }
    e->rec.instance.set_state(ppn::types::v1::VM_STATE_MIGRATING);
    process = e->process;
  }
  MigrationProgress report;
  report.set_vm_id(vm_id);
  report.set_source_node_id(options_.node_id);
  report.set_target_node_id(request.target_node_id());
  OutgoingMigration migration;
  migration.uri = request.migration_uri();
  migration.max_bandwidth_mib_per_second = request.max_bandwidth_mib_per_second();
  migration.poll_interval = options_.migration_poll_interval;
  if (!options_.migration_tls.cert.empty()) {
    migration.tls_creds = "tls-client";
    migration.tls_hostname = request.target_node_id();
  }
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = runtime_.Connect(vm_id, process.get(), kQmpTimeout);
  // The agent connects from the node's own network (QEMU may sit in the VM's namespace) and
  // proves with the ticket that the target asked for this stream.
  absl::StatusOr<int> connection =
      qmp.ok() ? ConnectMigration(request.migration_uri(), request.migration_ticket(), absl::Seconds(10))
               : absl::StatusOr<int>(qmp.status());
  if (connection.ok()) {
    migration.fd = *connection;
    report = MigrateOverQmp(qmp->get(), migration, report, clock_, progress);
    close(*connection);  // QEMU holds its own copy
  } else {
    report.set_phase(ppn::types::v1::MIGRATION_PHASE_FAILED);
    report.set_message(std::string(connection.status().message()));
    *report.mutable_report_time() = ToProtoTimestamp(clock_->Now());
  }
  if (report.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED) {
    // The guest now runs on the target; this paused copy goes away.
    (*qmp)->Execute("quit").IgnoreError();
    qmp->reset();
    absl::Status gone = runtime_.Stop(vm_id, process.get(), absl::Seconds(2));
    if (gone.ok()) gone = Remove(e.get(), "migrated out");
    if (!gone.ok()) {
      absl::MutexLock l(&mu_);
      e->rec.instance.set_migrated_out(true);
      e->rec.instance.set_state_message("paused after migrating out");
      PersistLocked(e.get()).IgnoreError();
    }
    spdlog::info("vm.migrated_out vm={} target={} total_ms={} downtime_ms={} bytes={}", LogValue(vm_id),
                 LogValue(request.target_node_id()), TimeUtil::DurationToMilliseconds(report.total_time()),
                 TimeUtil::DurationToMilliseconds(report.downtime()), report.transferred_bytes());
    return report;
  }
  // The migration did not happen: the guest must run here again.
  std::string guest = "exited";
  if (qmp.ok() && process->Alive()) {
    absl::StatusOr<std::string> was = ContinueIfPaused(qmp->get());
    guest = was.ok() ? (*was == "running" ? "running" : "continued") : std::string(was.status().message());
  }
  {
    absl::MutexLock l(&mu_);
    bool alive = process != nullptr && process->Alive();
    e->rec.instance.set_state(alive ? ppn::types::v1::VM_STATE_RUNNING : ppn::types::v1::VM_STATE_FAILED);
    if (!alive) e->rec.instance.set_state_message("QEMU exited during an outgoing migration");
    absl::Status s = PersistLocked(e.get());
    if (!s.ok()) spdlog::error("vm.store_failed vm={} error={}", LogValue(vm_id), LogValue(s.message()));
  }
  spdlog::warn("vm.migration_failed vm={} target={} reason={} guest={}", LogValue(vm_id),
               LogValue(request.target_node_id()), LogValue(report.message()), LogValue(guest));
  return report;
}

absl::StatusOr<VmInstance> VmManager::ResumeVm(const std::string& vm_id) {
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  std::shared_ptr<Process> process;
  {
    absl::MutexLock l(&mu_);
    if (vms_.count(vm_id) == 0) return NotHere(vm_id);
    if (e->rec.migration_port != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is waiting for an incoming migration on node ", options_.node_id));
    }
    process = e->process;
  }
  if (process == nullptr || !process->Alive()) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " has no running QEMU to continue"));
  }
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, runtime_.Connect(vm_id, process.get(), kQmpTimeout));
  PPN_ASSIGN_OR_RETURN(std::string run_state, QueryRunState(qmp.get()));
  if (!IsPaused(run_state)) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not paused (QEMU is ", run_state, ")"));
  }
  PPN_RETURN_IF_ERROR(ContinueIfPaused(qmp.get()).status());
  absl::MutexLock l(&mu_);
  e->rec.instance.set_state(ppn::types::v1::VM_STATE_RUNNING);
  e->rec.instance.set_migrated_out(false);
  e->rec.instance.clear_state_message();
  // The guest runs now, whatever the store says; a restart would find it running anyway.
  absl::Status s = PersistLocked(e.get());
  if (!s.ok()) spdlog::error("vm.store_failed vm={} error={}", LogValue(vm_id), LogValue(s.message()));
  spdlog::info("vm.resumed vm={} tenant={} was={}", LogValue(vm_id), LogValue(e->rec.instance.tenant_id()),
               LogValue(run_state));
  return e->rec.instance;
}

void VmManager::StartIncoming(const std::string& vm_id, int fd) {
  struct Close {
    int fd;
    ~Close() { close(fd); }
  } owned{fd};
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return;
  absl::MutexLock op(&e->op);  // after PrepareIncoming has answered
  std::shared_ptr<Process> process;
  std::string source;
  {
    absl::MutexLock l(&mu_);
    if (e->rec.migration_port == 0) return;
    process = e->process;
    source = e->migration_source;
  }
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = runtime_.Connect(vm_id, process.get(), kQmpTimeout);
  absl::Status s = qmp.ok() ? StartIncomingOnFd(qmp->get(), fd, options_.migration_tls.cert.empty() ? "" : "tls-server",
                                                absl::StrCat("CN=", source))
                            : qmp.status();
  if (!s.ok()) {
    spdlog::warn("vm.incoming_failed vm={} error={}", LogValue(vm_id), LogValue(s.message()));
    Remove(e.get(), "its incoming migration could not start").IgnoreError();
    return;
  }
  spdlog::info("vm.incoming_started vm={} source={}", LogValue(vm_id), LogValue(source));
}

void VmManager::SettleIncoming(Entry* e) {
  std::string vm_id;
  std::shared_ptr<Process> process;
  absl::Time deadline;
  {
    absl::MutexLock l(&mu_);
    if (e->rec.migration_port == 0 || e->rec.instance.state() != ppn::types::v1::VM_STATE_MIGRATING) return;
    vm_id = e->rec.instance.vm_id();
    process = e->process;
    deadline = e->ready_deadline;
  }
  std::optional<IncomingState> state;
  if (process != nullptr && process->Alive()) {
    absl::StatusOr<std::unique_ptr<QmpClient>> qmp = runtime_.Connect(vm_id, process.get(), absl::Seconds(2));
    absl::StatusOr<IncomingState> s = qmp.ok() ? QueryIncoming(qmp->get()) : qmp.status();
    if (s.ok()) state = *s;
  }
  if (process == nullptr || !process->Alive()) {
    Remove(e, "incoming migration failed; QEMU exited").IgnoreError();
  } else if (state == IncomingState::kFailed) {
    Remove(e, "incoming migration failed").IgnoreError();
  } else if (state == IncomingState::kWaiting && clock_->Now() >= deadline) {
    Remove(e, "no migration stream arrived within the ready timeout").IgnoreError();
  } else if (state == IncomingState::kRunning) {
    std::vector<PrivateNic> nics;
    {
      absl::MutexLock l(&mu_);
      for (const auto& n : e->rec.instance.private_nics()) {
        nics.push_back({n.network_id(), n.address(), n.prefix_length(), n.mac()});
      }
    }
    // The guest's ARP cache came along: its peers that were beside it are not here.
    if (network_ != nullptr) network_->private_networks().Activate(nics);
    absl::MutexLock l(&mu_);
    ports_.Release({e->rec.migration_port});
    e->rec.migration_port = 0;
    e->ready_deadline = absl::InfiniteFuture();
    e->rec.instance.set_state(ppn::types::v1::VM_STATE_RUNNING);
    e->rec.instance.clear_state_message();
    absl::Status s = PersistLocked(e);
    if (!s.ok()) spdlog::error("vm.store_failed vm={} error={}", LogValue(vm_id), LogValue(s.message()));
    spdlog::info("vm.migrated_in vm={} tenant={}", LogValue(vm_id), LogValue(e->rec.instance.tenant_id()));
  }
}

void VmManager::SettleAllIncoming() {
  std::vector<std::shared_ptr<Entry>> incoming;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [_, e] : vms_) {
      if (e->rec.migration_port != 0) incoming.push_back(e);
    }
  }
  for (const auto& e : incoming) {
    if (!e->op.TryLock()) continue;
    SettleIncoming(e.get());
    e->op.Unlock();
  }
}

}  // namespace ppn::host
