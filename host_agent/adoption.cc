#include "host_agent/adoption.h"

#include <signal.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "host_agent/qmp_migration.h"
#include "spdlog/spdlog.h"

namespace ppn::host {
namespace {

using ppn::types::v1::VmState;

constexpr absl::Duration kQmpTimeout = absl::Seconds(10);

bool Settled(const std::string& migration) {
  return migration.empty() || migration == "completed" || migration == "failed" || migration == "cancelled";
}

void Kill(ProcessSpawner* spawner, pid_t pid, const std::string& vm_id, const char* event) {
  absl::StatusOr<std::unique_ptr<Process>> p = spawner->Attach(pid);
  if (!p.ok()) return;
  (*p)->Signal(SIGKILL);
  (*p)->WaitForExit(absl::Seconds(10));
  spdlog::warn("{} vm={} pid={}", event, LogValue(vm_id), pid);
}

// Asks QEMU what it is doing; cancels an outgoing migration whose MigrateOut died with the
// agent, since nobody follows it any more.
FoundQemu Inspect(VmRuntime* runtime, const StoredVm& rec, Process* process, std::unique_ptr<QmpClient>* qmp) {
  FoundQemu found;
  found.alive = process != nullptr && process->Alive();
  if (!found.alive) return found;
  absl::StatusOr<std::unique_ptr<QmpClient>> c = runtime->Connect(rec.instance.vm_id(), process, kQmpTimeout);
  if (!c.ok()) return found;
  *qmp = *std::move(c);
  absl::StatusOr<std::string> migration = QueryMigrationStatus(qmp->get());
  if (rec.migration_port == 0 && migration.ok() && !Settled(*migration)) {
    (*qmp)->Execute("migrate_cancel").IgnoreError();
    for (int i = 0; i < 200 && migration.ok() && !Settled(*migration); ++i) {
      absl::SleepFor(absl::Milliseconds(25));
      migration = QueryMigrationStatus(qmp->get());
    }
  }
  absl::StatusOr<std::string> run_state = QueryRunState(qmp->get());
  found.answers_qmp = run_state.ok() && migration.ok();
  found.run_state = run_state.value_or("");
  found.migration_status = migration.value_or("");
  return found;
}

}  // namespace

Adoption DecideAdoption(const StoredVm& rec, const FoundQemu& found) {
  Adoption a;
  const VmState stored = rec.instance.state();
  const bool incoming = rec.migration_port != 0;
  a.state = stored;
  a.state_message = rec.instance.state_message();
  a.migrated_out = rec.instance.migrated_out();
  if (!found.alive) {
    a.migrated_out = false;
    // A spawn that never answered, a destroy under way, a target that never got its guest:
    // nothing is left to report.
    if (incoming || stored == ppn::types::v1::VM_STATE_PENDING || stored == ppn::types::v1::VM_STATE_STOPPING) {
      a.remove = true;
    } else if (stored != ppn::types::v1::VM_STATE_FAILED && stored != ppn::types::v1::VM_STATE_STOPPED) {
      a.state = ppn::types::v1::VM_STATE_FAILED;
      a.state_message = "the QEMU process ended while the agent was down";
    }
    return a;
  }
  if (!found.answers_qmp) {
    a.state = ppn::types::v1::VM_STATE_FAILED;
    a.state_message = "QEMU does not answer QMP";
    a.incoming = incoming;
    return a;
  }
  const std::string& rs = found.run_state;
  if (incoming) {
    if (rs == "running") {
      a.state = ppn::types::v1::VM_STATE_RUNNING;
      a.state_message.clear();
    } else if (rs == "inmigrate" && found.migration_status != "failed" && found.migration_status != "cancelled") {
      a.state = ppn::types::v1::VM_STATE_MIGRATING;
      a.state_message = "waiting for an incoming migration";
      a.incoming = true;
    } else {
      a.remove = true;
    }
    return a;
  }
  a.migrated_out = false;
  a.state_message.clear();
  if (stored == ppn::types::v1::VM_STATE_PENDING && (rs == "inmigrate" || rs == "paused")) {
    // A create restoring a template that did not finish: its guest may still hold the
    // template's identity. The fleet's retry creates it again.
    a.remove = true;
    return a;
  }
  if (rs == "running") {
    // A guest still booting stays STARTING (the agent watches it again); every other running
    // one is RUNNING.
    a.state = stored == ppn::types::v1::VM_STATE_STARTING ? stored : ppn::types::v1::VM_STATE_RUNNING;
  } else if (rs == "postmigrate" || (rs == "paused" && found.migration_status == "completed")) {
    // The memory went to another node; whether it runs there is for the fleet to say.
    a.state = ppn::types::v1::VM_STATE_MIGRATING;
    a.migrated_out = true;
    a.state_message = "paused after migrating out";
  } else if (rs == "paused") {
    // Paused by a migration that did not complete: the guest must run again here.
    a.state = ppn::types::v1::VM_STATE_RUNNING;
    a.cont = true;
  } else {
    a.state = ppn::types::v1::VM_STATE_FAILED;
    a.state_message = absl::StrCat("QEMU reports ", rs);
  }
  return a;
}

absl::StatusOr<std::vector<AdoptedVm>> AdoptAtStart(VmStore* store, VmRuntime* runtime) {
  PPN_ASSIGN_OR_RETURN(std::vector<StoredVm> stored, store->LoadAll());
  std::map<std::string, std::vector<pid_t>> running = runtime->FindQemus();
  std::vector<AdoptedVm> kept;
  std::set<std::string> recorded;
  for (StoredVm& rec : stored) {
    const std::string id = rec.instance.vm_id();
    recorded.insert(id);
    std::vector<pid_t> pids = running[id];
    running.erase(id);
    // Keep the QEMU the record names (or the first found), never two.
    auto named = std::find(pids.begin(), pids.end(), rec.instance.pid());
    if (named != pids.end()) std::iter_swap(pids.begin(), named);
    AdoptedVm vm;
    for (pid_t pid : pids) {
      if (vm.process != nullptr) {
        Kill(runtime->spawner(), pid, id, "vm.duplicate_killed");
      } else if (absl::StatusOr<std::unique_ptr<Process>> p = runtime->spawner()->Attach(pid); p.ok()) {
        vm.process = *std::move(p);
      }
    }
    std::unique_ptr<QmpClient> qmp;
    FoundQemu found = Inspect(runtime, rec, vm.process.get(), &qmp);
    Adoption a = DecideAdoption(rec, found);
    if (a.cont) {
      absl::StatusOr<std::string> was = ContinueIfPaused(qmp.get());
      if (!was.ok()) {
        a.state = ppn::types::v1::VM_STATE_FAILED;
        a.state_message = absl::StrCat("cannot continue the paused guest: ", was.status().message());
      }
    }
    qmp.reset();
    if (a.remove) {
      absl::Status s = runtime->Discard(id, vm.process.get());
      if (s.ok()) s = store->Delete(id);
      spdlog::info("vm.forgotten vm={} tenant={} state={} error={}", LogValue(id), LogValue(rec.instance.tenant_id()),
                   ppn::types::v1::VmState_Name(rec.instance.state()), LogValue(s.message()));
      continue;
    }
    vm.rec = std::move(rec);
    vm.incoming = a.incoming;
    ppn::host::v1::VmInstance& inst = vm.rec.instance;
    inst.set_state(a.state);
    inst.set_state_message(a.state_message);
    inst.set_migrated_out(a.migrated_out);
    if (!found.alive) vm.process.reset();
    if (!a.incoming) vm.rec.migration_port = 0;
    inst.set_pid(vm.process != nullptr ? vm.process->pid() : 0);
    spdlog::info("vm.adopted vm={} tenant={} pid={} state={} qemu={}", LogValue(id), LogValue(inst.tenant_id()),
                 inst.pid(), ppn::types::v1::VmState_Name(inst.state()), LogValue(found.run_state));
    kept.push_back(std::move(vm));
  }
  // Every spawn is recorded before its exec: a QEMU without a record is no VM of ours.
  for (const auto& [id, pids] : running) {
    for (pid_t pid : pids) Kill(runtime->spawner(), pid, id, "vm.orphan_killed");
  }
  for (const std::string& id : runtime->files().ListVmIds()) {
    if (recorded.count(id) == 0) runtime->files().Remove(id);
  }
  return kept;
}

}  // namespace ppn::host
