#include "host_agent/vm_runtime.h"

#include <signal.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace ppn::host {

VmRuntime::VmRuntime(ProcessSpawner* spawner, Options options)
    : spawner_(spawner), options_(std::move(options)), files_(spawner, options_.vms_dir, options_.qemu_owner) {}

void VmRuntime::SetNodeFeatures(std::string cgroup_root, bool seccomp) {
  cgroup_root_ = std::move(cgroup_root);
  seccomp_ = seccomp;
}

absl::Status VmRuntime::Start(const Launch& l, std::shared_ptr<Process>* process) {
  if (l.reuse_files) {
    PPN_RETURN_IF_ERROR(files_.EnsureSeed(l.vm_id, l.spec, l.network_config));
  } else if (l.clone_disk.empty()) {
    PPN_RETURN_IF_ERROR(files_.Create(l.vm_id, l.image, l.spec, l.network_config));
  } else {
    PPN_RETURN_IF_ERROR(files_.CreateClone(l.vm_id, l.clone_disk));
  }
  LaunchSpec launch;
  launch.qemu_binary = options_.qemu_binary;
  launch.vm_id = l.vm_id;
  launch.vm_dir = files_.Dir(l.vm_id);
  launch.vcpus = l.spec.vcpus();
  launch.memory_mib = l.spec.memory_mib();
  launch.max_memory_mib = l.spec.max_memory_mib();
  launch.kvm = l.kvm;
  launch.image = l.image;
  launch.forwards = l.forwards;
  launch.incoming = l.incoming;
  launch.netns = l.netns;
  launch.taps = l.taps;
  launch.memory_file = l.memory_file;
  launch.memory_shared = l.memory_shared;
  launch.seed_path = l.seed_path;
  launch.vmgenid = l.vmgenid;
  launch.restrict_network = l.restrict_network;
  launch.tls_dir = options_.tls_dir;
  launch.seccomp = seccomp_;
  launch.run_as_user = options_.qemu_user;
  if (!cgroup_root_.empty()) {
    PPN_ASSIGN_OR_RETURN(launch.cgroup_dir, CreateVmCgroup(cgroup_root_, launch));
  }
  PPN_ASSIGN_OR_RETURN(*process, LaunchQemu(spawner_, launch));
  // Lets a crash test kill the agent between the exec and its answer.
  if (options_.hold_after_exec_for_test > absl::ZeroDuration()) absl::SleepFor(options_.hold_after_exec_for_test);
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = Connect(l.vm_id, process->get(), absl::Seconds(10));
  absl::StatusOr<nlohmann::json> state = qmp.ok() ? (*qmp)->Execute("query-status") : qmp.status();
  if (state.ok() && (*process)->Alive()) return absl::OkStatus();
  absl::SleepFor(absl::Milliseconds(100));  // let QEMU finish writing why it stopped
  std::string why = ReadFileTail(QemuLogPath(launch.vm_dir));
  return absl::FailedPreconditionError(
      absl::StrCat("QEMU did not start VM ", l.vm_id, ": ", why.empty() ? std::string(state.status().message()) : why));
}

absl::StatusOr<std::unique_ptr<QmpClient>> VmRuntime::Connect(const std::string& vm_id, Process* process,
                                                              absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<std::unique_ptr<QmpClient>> qmp =
        QmpClient::Connect(QmpSocketPath(files_.Dir(vm_id)), std::min(timeout, absl::Milliseconds(500)));
    if (qmp.ok() || absl::Now() >= deadline) return qmp;
    absl::StatusCode code = qmp.status().code();
    if (code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kDeadlineExceeded) return qmp;
    // A QEMU that has exited will never answer: say so now, not at the deadline.
    if (process == nullptr || !process->Alive()) {
      return absl::UnavailableError(absl::StrCat("the QEMU process of vm ", vm_id, " is not running"));
    }
  }
}

absl::Status VmRuntime::Stop(const std::string& vm_id, Process* process, absl::Duration grace, bool* graceful) {
  if (graceful != nullptr) *graceful = true;
  if (process == nullptr || !process->Alive()) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = Connect(vm_id, process, absl::Seconds(2));
  if (qmp.ok()) (*qmp)->Execute("system_powerdown").IgnoreError();
  if (process->WaitForExit(grace)) return absl::OkStatus();
  if (graceful != nullptr) *graceful = false;
  process->Signal(SIGTERM);
  if (process->WaitForExit(absl::Seconds(5))) return absl::OkStatus();
  process->Signal(SIGKILL);
  if (process->WaitForExit(absl::Seconds(5))) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("QEMU of vm ", vm_id, " (pid ", process->pid(), ") survived SIGKILL"));
}

absl::Status VmRuntime::Discard(const std::string& vm_id, Process* process) {
  if (process != nullptr && process->Alive()) {
    process->Signal(SIGKILL);
    if (!process->WaitForExit(absl::Seconds(10))) {
      return absl::InternalError(absl::StrCat("QEMU of vm ", vm_id, " (pid ", process->pid(), ") survived SIGKILL"));
    }
  }
  files_.Remove(vm_id);
  if (!cgroup_root_.empty()) rmdir((cgroup_root_ + "/" + vm_id).c_str());
  return absl::OkStatus();
}

std::map<std::string, std::vector<pid_t>> VmRuntime::FindQemus() {
  std::map<std::string, std::vector<pid_t>> out;
  for (const ProcessInfo& p : spawner_->ListProcesses()) {
    if (std::optional<std::string> id = QemuVmId(p.argv, files_.vms_dir())) out[*id].push_back(p.pid);
  }
  return out;
}

}  // namespace ppn::host
