#include "host_agent/vm_manager.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "google/protobuf/util/time_util.h"
#include "host_agent/node_probe.h"
#include "host_agent/qemu_launcher.h"
#include "host_agent/qmp_client.h"
#include "spdlog/spdlog.h"

namespace ppn::host {
namespace {

using google::protobuf::util::TimeUtil;
using ppn::host::v1::VmInstance;
using ppn::types::v1::MigrationPhase;
using ppn::types::v1::MigrationProgress;
using ppn::types::v1::VmSpec;
using ppn::types::v1::VmState;

constexpr absl::Duration kQmpTimeout = absl::Seconds(10);

absl::Status ValidateSpawn(const std::string& tenant_id, const std::string& vm_id, const VmSpec& spec) {
  PPN_RETURN_IF_ERROR(ValidateVmId(vm_id));
  PPN_RETURN_IF_ERROR(ValidateTenantId(tenant_id));
  return ValidateVmSpec(spec);
}

bool IsLive(VmState s) {
  return s == ppn::types::v1::VM_STATE_RUNNING || s == ppn::types::v1::VM_STATE_STARTING ||
         s == ppn::types::v1::VM_STATE_MIGRATING || s == ppn::types::v1::VM_STATE_STOPPING ||
         s == ppn::types::v1::VM_STATE_PENDING;
}

std::vector<uint32_t> PortsOf(const StoredVm& vm) {
  std::vector<uint32_t> ports;
  for (const auto& p : vm.instance.forwarded_ports()) ports.push_back(p.host_port());
  if (vm.migration_port != 0) ports.push_back(vm.migration_port);
  return ports;
}

// A YAML-safe scalar for the NoCloud meta-data.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c != '\n' && c != '\r') out.push_back(c);
  }
  return out + "\"";
}

// The NoCloud seed: an ISO 9660 volume labelled "cidata" with meta-data and user-data.
absl::Status WriteSeed(const std::string& vm_dir, const std::string& vm_id, const VmSpec& spec) {
  std::string dir = vm_dir + "/seed";
  mkdir(dir.c_str(), 0700);
  std::string hostname = spec.display_name().empty() ? vm_id : spec.display_name();
  PPN_RETURN_IF_ERROR(WriteFileAtomically(dir + "/meta-data",
                                          absl::StrCat("instance-id: ", vm_id, "\nlocal-hostname: ", hostname, "\n")));
  std::string user_data = spec.user_data();
  if (user_data.empty()) {
    user_data = "#cloud-config\n";
    if (spec.ssh_authorized_keys_size() > 0) {
      user_data += "ssh_authorized_keys:\n";
      for (const auto& key : spec.ssh_authorized_keys()) user_data += "  - " + Quote(key) + "\n";
    }
  }
  PPN_RETURN_IF_ERROR(WriteFileAtomically(dir + "/user-data", user_data, 0600));
  absl::Status s =
      RunTool({"genisoimage", "-quiet", "-output", SeedPath(vm_dir), "-volid", "cidata", "-joliet", "-rock", dir});
  std::filesystem::remove_all(dir);  // the ISO holds it; user-data is not left lying around
  return s;
}

}  // namespace

bool QemuAlive(int pid, const std::string& vm_id) {
  if (pid <= 0) return false;
  int status;
  if (waitpid(pid, &status, WNOHANG) == pid) return false;  // our child, now reaped
  if (kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  size_t paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z') return false;
  // Guard against pid reuse: the process must be QEMU named after this VM.
  std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::stringstream ss;
  ss << cmd.rdbuf();
  std::string cmdline = ss.str();
  for (char& c : cmdline) {
    if (c == '\0') c = ' ';
  }
  return absl::StrContains(cmdline, " ppn-" + vm_id + " ");
}

VmManager::VmManager(Options options, ImageCatalog catalog, VmStore* store, Clock* clock)
    : options_(std::move(options)),
      catalog_(std::move(catalog)),
      store_(store),
      clock_(clock),
      ports_(options_.host_address, options_.port_first, options_.port_last) {}

VmManager::~VmManager() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    stop_cv_.SignalAll();
  }
  if (monitor_.joinable()) monitor_.join();
}

std::string VmManager::VmDir(const std::string& vm_id) const { return options_.state_dir + "/vms/" + vm_id; }

ppn::types::v1::KvmSupport VmManager::kvm_support() const {
  if (options_.kvm_mode == KvmMode::kSimulate) return ppn::types::v1::KVM_SUPPORT_SIMULATED;
  return kvm_usable_ ? ppn::types::v1::KVM_SUPPORT_AVAILABLE : ppn::types::v1::KVM_SUPPORT_NONE;
}

absl::Status VmManager::Start() {
  std::filesystem::create_directories(options_.state_dir + "/vms");
  if (options_.kvm_mode == KvmMode::kAuto) {
    absl::StatusOr<Image> probe = catalog_.Find(options_.kvm_probe_image);
    KvmProbeResult kvm = probe.ok() ? ProbeKvm(options_.qemu_binary, *probe, options_.state_dir,
                                               options_.state_dir + "/kvm-probe", options_.kvm_probe_timeout)
                                    : KvmProbeResult{false, "no KVM probe image in the catalog"};
    kvm_usable_ = kvm.usable;
    kvm_reason_ = kvm.reason;
  } else {
    kvm_reason_ = options_.kvm_mode == KvmMode::kOff ? "disabled by --kvm=off"
                                                     : "simulated for placement (--kvm=simulate); guests run under TCG";
  }
  CgroupProbeResult cgroup = ProbeCgroup(options_.node_id);
  cgroup_root_ = cgroup.root;
  qemu_user_ = ResolveQemuUser(options_.qemu_user);
  capabilities_.set_cgroup_v2(!cgroup_root_.empty());
  capabilities_.set_seccomp_sandbox(ProbeSeccomp(options_.qemu_binary));
  capabilities_.set_unprivileged_qemu(!qemu_user_.empty() || geteuid() != 0);
  capabilities_.set_balloon(true);
  spdlog::info("node.probed node={} kvm={} kvm_reason=\"{}\" cgroup_v2={} cgroup_reason=\"{}\" seccomp={} qemu_user={}",
               options_.node_id, kvm_usable_, kvm_reason_, capabilities_.cgroup_v2(), cgroup.reason,
               capabilities_.seccomp_sandbox(), qemu_user_.empty() ? "(agent's)" : qemu_user_);

  PPN_ASSIGN_OR_RETURN(std::vector<StoredVm> stored, store_->LoadAll());
  for (StoredVm& vm : stored) {
    auto entry = std::make_shared<Entry>();
    const std::string id = vm.instance.vm_id();
    bool live = IsLive(vm.instance.state()) && QemuAlive(vm.instance.pid(), id);
    std::string qmp_status;
    if (live) {
      absl::StatusOr<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(QmpSocketPath(VmDir(id)), kQmpTimeout);
      absl::StatusOr<nlohmann::json> st = qmp.ok() ? (*qmp)->Execute("query-status") : qmp.status();
      live = st.ok();
      if (st.ok()) qmp_status = st->value("status", "");
    }
    if (live) {
      ports_.Reserve(PortsOf(vm));
      if (qmp_status == "running") vm.instance.set_state(ppn::types::v1::VM_STATE_RUNNING);
      if (!cgroup_root_.empty()) entry->cgroup_dir = cgroup_root_ + "/" + id;
      spdlog::info("vm.adopted vm={} tenant={} pid={} status={}", id, vm.instance.tenant_id(), vm.instance.pid(),
                   qmp_status);
    } else if (IsLive(vm.instance.state())) {
      vm.instance.set_state(ppn::types::v1::VM_STATE_FAILED);
      vm.instance.set_state_message("the QEMU process ended while the agent was down");
      vm.instance.set_pid(0);
      vm.migration_port = 0;
      spdlog::warn("vm.vanished vm={} tenant={}", id, vm.instance.tenant_id());
    }
    entry->rec = vm;
    absl::MutexLock l(&mu_);
    Persist(entry.get());
    vms_[id] = entry;
  }
  monitor_ = std::thread([this] { MonitorLoop(); });
  return absl::OkStatus();
}

void VmManager::Persist(Entry* entry) {
  absl::Status s = store_->Put(entry->rec);
  if (!s.ok())
    spdlog::error("vm.store_failed vm={} error=\"{}\"", entry->rec.instance.vm_id(), std::string(s.message()));
}

uint64_t VmManager::TotalMib() const {
  return options_.advertised_memory_mib != 0 ? options_.advertised_memory_mib : ReadMemoryInfo().total_mib;
}

uint64_t VmManager::CommittedMibLocked() const {
  uint64_t sum = 0;
  for (const auto& [_, e] : vms_) {
    if (IsLive(e->rec.instance.state())) sum += e->rec.instance.spec().memory_mib();
  }
  return sum;
}

absl::Status VmManager::CheckRoomLocked(uint64_t memory_mib) const {
  uint64_t total = TotalMib();
  uint64_t committed = CommittedMibLocked();
  uint64_t reserved = options_.safety_margin_mib + committed;
  uint64_t available = total > reserved ? total - reserved : 0;
  if (memory_mib > available) {
    return absl::ResourceExhaustedError(absl::StrCat("node ", options_.node_id, " has ", available,
                                                     " MiB available for VMs (", total, " MiB total, ",
                                                     options_.safety_margin_mib, " MiB safety margin, ", committed,
                                                     " MiB in use); the VM needs ", memory_mib, " MiB"));
  }
  return absl::OkStatus();
}

std::shared_ptr<VmManager::Entry> VmManager::Find(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  auto it = vms_.find(vm_id);
  return it == vms_.end() ? nullptr : it->second;
}

absl::Status VmManager::Launch(const std::string& vm_id, const VmSpec& spec, const std::vector<uint32_t>& ports,
                               const std::string& incoming_uri, bool kvm, Entry* entry, int* pid,
                               absl::Time* exec_time) {
  PPN_ASSIGN_OR_RETURN(Image image, catalog_.Find(spec.image()));
  std::string dir = VmDir(vm_id);
  std::filesystem::remove_all(dir);
  if (!std::filesystem::create_directories(dir)) {
    return absl::InternalError(absl::StrCat("cannot create ", dir));
  }
  chmod(dir.c_str(), 0750);
  std::vector<std::string> overlay = {
      "qemu-img", "create", "-q", "-f", "qcow2", "-b", image.base_image, "-F", image.base_format, DiskPath(dir)};
  if (spec.disk_gib() > 0) overlay.push_back(absl::StrCat(spec.disk_gib(), "G"));
  absl::Status s = RunTool(overlay);
  if (!s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the disk overlay on image ", image.name, ": ", s.message()));
  }
  PPN_RETURN_IF_ERROR(WriteSeed(dir, vm_id, spec));
  if (!qemu_user_.empty()) {
    // QEMU drops to this user after opening its files; it must still reach them.
    passwd* pw = getpwnam(qemu_user_.c_str());
    if (pw != nullptr) {
      for (const std::string& f : {dir, DiskPath(dir), SeedPath(dir)}) {
        if (chown(f.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
          return absl::PermissionDeniedError(absl::StrCat("cannot hand ", f, " to ", qemu_user_));
        }
      }
    }
  }
  LaunchSpec launch;
  launch.qemu_binary = options_.qemu_binary;
  launch.vm_id = vm_id;
  launch.vm_dir = dir;
  launch.vcpus = spec.vcpus();
  launch.memory_mib = spec.memory_mib();
  launch.kvm = kvm;
  launch.image = image;
  for (int i = 0; i < spec.port_forwards_size(); ++i) {
    const auto& f = spec.port_forwards(i);
    launch.forwards.push_back(
        {options_.host_address, ports[i], f.guest_port(), f.protocol() == ppn::types::v1::PROTOCOL_UDP});
  }
  launch.incoming_uri = incoming_uri;
  launch.seccomp = capabilities_.seccomp_sandbox();
  launch.run_as_user = qemu_user_;
  if (!cgroup_root_.empty()) {
    PPN_ASSIGN_OR_RETURN(launch.cgroup_dir, CreateVmCgroup(cgroup_root_, launch));
    absl::MutexLock l(&mu_);
    entry->cgroup_dir = launch.cgroup_dir;
  }
  PPN_ASSIGN_OR_RETURN(*pid, LaunchQemu(launch));
  *exec_time = absl::Now();
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(QmpSocketPath(dir), kQmpTimeout);
  absl::StatusOr<nlohmann::json> status = qmp.ok() ? (*qmp)->Execute("query-status") : qmp.status();
  if (!status.ok() || !QemuAlive(*pid, vm_id)) {
    absl::SleepFor(absl::Milliseconds(100));  // let QEMU finish writing why it stopped
    std::string why = ReadFileTail(dir + "/qemu.log");
    return absl::FailedPreconditionError(absl::StrCat("QEMU did not start VM ", vm_id, ": ",
                                                      why.empty() ? std::string(status.status().message()) : why));
  }
  return absl::OkStatus();
}

void VmManager::Cleanup(const std::string& vm_id, int pid, const std::vector<uint32_t>& ports,
                        const std::string& cgroup_dir) {
  if (pid > 0 && QemuAlive(pid, vm_id)) {
    kill(pid, SIGKILL);
    for (int i = 0; i < 200 && QemuAlive(pid, vm_id); ++i) absl::SleepFor(absl::Milliseconds(10));
  }
  std::error_code ec;
  std::filesystem::remove_all(VmDir(vm_id), ec);
  if (!cgroup_dir.empty()) rmdir(cgroup_dir.c_str());
  ports_.Release(ports);
}

absl::StatusOr<VmInstance> VmManager::Spawn(const std::string& tenant_id, const std::string& vm_id,
                                            const VmSpec& spec) {
  absl::Time t0 = absl::Now();
  PPN_RETURN_IF_ERROR(ValidateSpawn(tenant_id, vm_id, spec));
  PPN_RETURN_IF_ERROR(catalog_.Find(spec.image()).status());
  auto entry = std::make_shared<Entry>();
  std::vector<uint32_t> ports;
  {
    absl::MutexLock l(&mu_);
    if (vms_.count(vm_id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("vm ", vm_id, " already exists on node ", options_.node_id));
    }
    PPN_RETURN_IF_ERROR(CheckRoomLocked(spec.memory_mib()));
    PPN_ASSIGN_OR_RETURN(ports, ports_.Allocate(spec.port_forwards_size()));
    VmInstance& vm = entry->rec.instance;
    vm.set_vm_id(vm_id);
    vm.set_tenant_id(tenant_id);
    vm.set_state(ppn::types::v1::VM_STATE_PENDING);
    *vm.mutable_spec() = spec;
    vm.mutable_spec()->clear_user_data();
    vms_[vm_id] = entry;  // holds the memory and the id while QEMU starts
  }
  absl::MutexLock op(&entry->op);
  int pid = 0;
  bool kvm = kvm_usable_ && options_.kvm_mode == KvmMode::kAuto;
  absl::Time exec_time;
  absl::Status launched = Launch(vm_id, spec, ports, "", kvm, entry.get(), &pid, &exec_time);
  absl::MutexLock l(&mu_);
  last_spawn_overhead_ = exec_time - t0;
  if (!launched.ok()) {
    Cleanup(vm_id, pid, ports, entry->cgroup_dir);
    vms_.erase(vm_id);
    return launched;
  }
  VmInstance& vm = entry->rec.instance;
  vm.set_state(ppn::types::v1::VM_STATE_RUNNING);
  vm.set_accelerator(kvm ? ppn::types::v1::ACCELERATOR_KVM : ppn::types::v1::ACCELERATOR_TCG);
  vm.set_pid(pid);
  *vm.mutable_start_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_->Now()));
  vm.set_console_log_path(ConsoleLogPath(VmDir(vm_id)));
  for (int i = 0; i < spec.port_forwards_size(); ++i) {
    auto* p = vm.add_forwarded_ports();
    p->set_guest_port(spec.port_forwards(i).guest_port());
    p->set_protocol(spec.port_forwards(i).protocol() == ppn::types::v1::PROTOCOL_UDP ? ppn::types::v1::PROTOCOL_UDP
                                                                                     : ppn::types::v1::PROTOCOL_TCP);
    p->set_host_address(options_.host_address);
    p->set_host_port(ports[i]);
  }
  Persist(entry.get());
  spdlog::info("vm.spawned vm={} tenant={} pid={} accel={} memory_mib={} exec_ms={} ms={}", vm_id, tenant_id, pid,
               kvm ? "kvm" : "tcg", spec.memory_mib(), absl::ToInt64Milliseconds(exec_time - t0),
               absl::ToInt64Milliseconds(absl::Now() - t0));
  return vm;
}

absl::Status VmManager::StopProcess(const std::string& vm_id, int pid, absl::Duration grace) {
  auto wait = [&](absl::Duration d) {
    absl::Time deadline = absl::Now() + d;
    while (QemuAlive(pid, vm_id)) {
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return true;
  };
  if (!QemuAlive(pid, vm_id)) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(QmpSocketPath(VmDir(vm_id)), absl::Seconds(2));
  if (qmp.ok()) (*qmp)->Execute("system_powerdown").IgnoreError();
  if (wait(grace)) return absl::OkStatus();
  kill(pid, SIGTERM);
  if (wait(absl::Seconds(5))) return absl::OkStatus();
  kill(pid, SIGKILL);
  if (wait(absl::Seconds(5))) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("QEMU of vm ", vm_id, " (pid ", pid, ") survived SIGKILL"));
}

absl::StatusOr<VmInstance> VmManager::Destroy(const std::string& vm_id, absl::Duration grace) {
  std::shared_ptr<Entry> entry = Find(vm_id);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("vm ", vm_id, " is not on node ", options_.node_id));
  }
  absl::MutexLock op(&entry->op);
  int pid;
  {
    absl::MutexLock l(&mu_);
    if (vms_.count(vm_id) == 0)
      return absl::NotFoundError(absl::StrCat("vm ", vm_id, " is not on node ", options_.node_id));
    pid = entry->rec.instance.pid();
    entry->rec.instance.set_state(ppn::types::v1::VM_STATE_STOPPING);
  }
  PPN_RETURN_IF_ERROR(StopProcess(vm_id, pid, grace > absl::ZeroDuration() ? grace : options_.default_grace));
  absl::MutexLock l(&mu_);
  Cleanup(vm_id, 0, PortsOf(entry->rec), entry->cgroup_dir);
  PPN_RETURN_IF_ERROR(store_->Delete(vm_id));
  vms_.erase(vm_id);
  VmInstance vm = entry->rec.instance;
  vm.set_state(ppn::types::v1::VM_STATE_STOPPED);
  vm.set_pid(0);
  spdlog::info("vm.destroyed vm={} tenant={}", vm_id, vm.tenant_id());
  return vm;
}

void VmManager::SettleAllIncoming() {
  std::vector<std::shared_ptr<Entry>> incoming;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [_, e] : vms_) {
      if (e->rec.instance.state() == ppn::types::v1::VM_STATE_MIGRATING && e->rec.migration_port != 0) {
        incoming.push_back(e);
      }
    }
  }
  for (const auto& e : incoming) {
    if (!e->op.TryLock()) continue;
    SettleIncoming(e.get());
    e->op.Unlock();
  }
}

std::vector<VmInstance> VmManager::List() {
  SettleAllIncoming();  // report a finished incoming migration as RUNNING, not a second later
  absl::MutexLock l(&mu_);
  std::vector<VmInstance> out;
  for (const auto& [_, e] : vms_) out.push_back(e->rec.instance);
  return out;
}

ppn::host::v1::Heartbeat VmManager::MakeHeartbeat() {
  SettleAllIncoming();
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id(options_.node_id);
  *hb.mutable_send_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_->Now()));
  uint64_t total = TotalMib();
  hb.set_total_memory_mib(total);
  hb.set_safety_margin_mib(options_.safety_margin_mib);
  hb.set_cpus(CpuCount());
  hb.set_load_average(LoadAverage());
  hb.set_kvm(kvm_support());
  *hb.mutable_capabilities() = capabilities_;
  hb.set_mesh_address(options_.host_address);
  absl::MutexLock l(&mu_);
  uint64_t reserved = options_.safety_margin_mib + CommittedMibLocked();
  hb.set_available_memory_mib(total > reserved ? total - reserved : 0);
  for (const auto& [_, e] : vms_) *hb.add_vms() = e->rec.instance;
  return hb;
}

absl::StatusOr<uint64_t> VmManager::SetBalloon(const std::string& vm_id, uint64_t target_mib) {
  std::shared_ptr<Entry> entry = Find(vm_id);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " is not on node ", options_.node_id));
  absl::MutexLock op(&entry->op);
  SettleIncoming(entry.get());
  uint64_t memory;
  {
    absl::MutexLock l(&mu_);
    if (entry->rec.instance.state() != ppn::types::v1::VM_STATE_RUNNING) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not running"));
    }
    memory = entry->rec.instance.spec().memory_mib();
  }
  if (target_mib < 16 || target_mib > memory) {
    return absl::InvalidArgumentError(absl::StrCat("balloon target must be 16-", memory, " MiB"));
  }
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, QmpClient::Connect(QmpSocketPath(VmDir(vm_id)), kQmpTimeout));
  PPN_RETURN_IF_ERROR(qmp->Execute("balloon", {{"value", target_mib << 20}}).status());
  PPN_ASSIGN_OR_RETURN(nlohmann::json info, qmp->Execute("query-balloon"));
  return info.value("actual", uint64_t{0}) >> 20;
}

absl::StatusOr<uint64_t> VmManager::GetBalloon(const std::string& vm_id, uint64_t* memory_mib) {
  std::shared_ptr<Entry> entry = Find(vm_id);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " is not on node ", options_.node_id));
  absl::MutexLock op(&entry->op);
  SettleIncoming(entry.get());
  {
    absl::MutexLock l(&mu_);
    if (entry->rec.instance.state() != ppn::types::v1::VM_STATE_RUNNING) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not running"));
    }
    *memory_mib = entry->rec.instance.spec().memory_mib();
  }
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, QmpClient::Connect(QmpSocketPath(VmDir(vm_id)), kQmpTimeout));
  PPN_ASSIGN_OR_RETURN(nlohmann::json info, qmp->Execute("query-balloon"));
  return info.value("actual", uint64_t{0}) >> 20;
}

absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> VmManager::PrepareIncoming(
    const ppn::host::v1::PrepareIncomingRequest& request) {
  const std::string& vm_id = request.vm_id();
  PPN_RETURN_IF_ERROR(ValidateSpawn(request.tenant_id(), vm_id, request.spec()));
  PPN_RETURN_IF_ERROR(catalog_.Find(request.spec().image()).status());
  bool kvm = request.accelerator() == ppn::types::v1::ACCELERATOR_KVM;
  if (kvm && !(kvm_usable_ && options_.kvm_mode == KvmMode::kAuto)) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", vm_id, " runs under KVM but node ", options_.node_id, " has no usable KVM"));
  }
  auto entry = std::make_shared<Entry>();
  std::vector<uint32_t> ports;
  {
    absl::MutexLock l(&mu_);
    if (vms_.count(vm_id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("vm ", vm_id, " already exists on node ", options_.node_id));
    }
    PPN_RETURN_IF_ERROR(CheckRoomLocked(request.spec().memory_mib()));
    PPN_ASSIGN_OR_RETURN(ports, ports_.Allocate(request.spec().port_forwards_size() + 1));
    VmInstance& vm = entry->rec.instance;
    vm.set_vm_id(vm_id);
    vm.set_tenant_id(request.tenant_id());
    vm.set_state(ppn::types::v1::VM_STATE_PENDING);
    *vm.mutable_spec() = request.spec();
    vm.mutable_spec()->clear_user_data();
    entry->rec.migration_port = ports.back();
    vms_[vm_id] = entry;
  }
  absl::MutexLock op(&entry->op);
  std::string uri = absl::StrCat("tcp:", options_.host_address, ":", ports.back());
  int pid = 0;
  absl::Time exec_time;
  absl::Status launched = Launch(vm_id, request.spec(), ports, uri, kvm, entry.get(), &pid, &exec_time);
  absl::MutexLock l(&mu_);
  if (!launched.ok()) {
    Cleanup(vm_id, pid, ports, entry->cgroup_dir);
    vms_.erase(vm_id);
    return launched;
  }
  ppn::host::v1::PrepareIncomingResponse response;
  response.set_migration_uri(uri);
  VmInstance& vm = entry->rec.instance;
  vm.set_state(ppn::types::v1::VM_STATE_MIGRATING);
  vm.set_state_message("waiting for an incoming migration");
  vm.set_accelerator(kvm ? ppn::types::v1::ACCELERATOR_KVM : ppn::types::v1::ACCELERATOR_TCG);
  vm.set_pid(pid);
  *vm.mutable_start_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_->Now()));
  vm.set_console_log_path(ConsoleLogPath(VmDir(vm_id)));
  for (int i = 0; i < request.spec().port_forwards_size(); ++i) {
    auto* p = vm.add_forwarded_ports();
    p->set_guest_port(request.spec().port_forwards(i).guest_port());
    p->set_protocol(request.spec().port_forwards(i).protocol() == ppn::types::v1::PROTOCOL_UDP
                        ? ppn::types::v1::PROTOCOL_UDP
                        : ppn::types::v1::PROTOCOL_TCP);
    p->set_host_address(options_.host_address);
    p->set_host_port(ports[i]);
  }
  *response.mutable_forwarded_ports() = vm.forwarded_ports();
  Persist(entry.get());
  spdlog::info("vm.incoming_prepared vm={} tenant={} uri={}", vm_id, request.tenant_id(), uri);
  return response;
}

absl::StatusOr<MigrationProgress> VmManager::MigrateOut(const ppn::host::v1::MigrateOutRequest& request,
                                                        const ProgressFn& progress) {
  const std::string& vm_id = request.vm_id();
  if (!absl::StartsWith(request.migration_uri(), "tcp:")) {
    return absl::InvalidArgumentError("migration_uri must be tcp:HOST:PORT from PrepareIncoming");
  }
  std::shared_ptr<Entry> entry = Find(vm_id);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " is not on node ", options_.node_id));
  absl::MutexLock op(&entry->op);
  SettleIncoming(entry.get());
  int pid;
  {
    absl::MutexLock l(&mu_);
    if (entry->rec.instance.state() != ppn::types::v1::VM_STATE_RUNNING) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not running"));
    }
    entry->rec.instance.set_state(ppn::types::v1::VM_STATE_MIGRATING);
    pid = entry->rec.instance.pid();
  }
  MigrationProgress report;
  report.set_vm_id(vm_id);
  report.set_source_node_id(options_.node_id);
  report.set_target_node_id(request.target_node_id());
  auto finish_failed = [&](const std::string& why) {
    absl::MutexLock l(&mu_);
    entry->rec.instance.set_state(QemuAlive(pid, vm_id) ? ppn::types::v1::VM_STATE_RUNNING
                                                        : ppn::types::v1::VM_STATE_FAILED);
    report.set_phase(ppn::types::v1::MIGRATION_PHASE_FAILED);
    report.set_message(why);
    *report.mutable_report_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_->Now()));
    spdlog::warn("vm.migration_failed vm={} target={} reason=\"{}\"", vm_id, request.target_node_id(), why);
    return report;
  };
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(QmpSocketPath(VmDir(vm_id)), kQmpTimeout);
  if (!qmp.ok()) return finish_failed(std::string(qmp.status().message()));
  // Block migration copies the disk overlay with the memory; incremental: only the overlay,
  // since the target has the same base image.
  uint64_t bandwidth =
      request.max_bandwidth_mib_per_second() != 0 ? request.max_bandwidth_mib_per_second() << 20 : uint64_t{1} << 40;
  for (auto [cmd, args] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"migrate-set-capabilities", {{"capabilities", {{{"capability", "block"}, {"state", true}}}}}},
           {"migrate-set-parameters",
            {{"block-incremental", true}, {"max-bandwidth", bandwidth}, {"downtime-limit", 100}}},
           {"migrate", {{"uri", request.migration_uri()}}}}) {
    absl::StatusOr<nlohmann::json> r = (*qmp)->Execute(cmd, args);
    if (!r.ok()) return finish_failed(std::string(r.status().message()));
  }
  absl::Time deadline = absl::Now() + absl::Minutes(10);
  nlohmann::json info;
  while (true) {
    absl::StatusOr<nlohmann::json> r = (*qmp)->Execute("query-migrate");
    if (!r.ok()) return finish_failed(std::string(r.status().message()));
    info = *r;
    std::string status = info.value("status", "");
    if (status == "completed") break;
    if (status == "failed" || status == "cancelled") {
      return finish_failed(info.value("error-desc", "migration " + status));
    }
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
          TimeUtil::MillisecondsToDuration(static_cast<int64_t>(report.remaining_bytes() * 8 / (mbps * 1000)));
    }
    *report.mutable_report_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_->Now()));
    if (!progress(report)) {
      (*qmp)->Execute("migrate_cancel").IgnoreError();
      return finish_failed("cancelled by the caller");
    }
    if (absl::Now() > deadline) {
      (*qmp)->Execute("migrate_cancel").IgnoreError();
      return finish_failed("migration did not finish within 10 minutes");
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  // The guest now runs on the target; this paused copy goes away.
  report.set_phase(ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  const nlohmann::json ram = info.value("ram", nlohmann::json::object());
  const nlohmann::json disk = info.value("disk", nlohmann::json::object());
  report.set_transferred_bytes(ram.value("transferred", uint64_t{0}) + disk.value("transferred", uint64_t{0}));
  report.set_remaining_bytes(0);
  *report.mutable_total_time() = TimeUtil::MillisecondsToDuration(info.value("total-time", int64_t{0}));
  *report.mutable_downtime() = TimeUtil::MillisecondsToDuration(info.value("downtime", int64_t{0}));
  *report.mutable_report_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_->Now()));
  (*qmp)->Execute("quit").IgnoreError();
  qmp->reset();
  StopProcess(vm_id, pid, absl::Seconds(2)).IgnoreError();
  absl::MutexLock l(&mu_);
  Cleanup(vm_id, 0, PortsOf(entry->rec), entry->cgroup_dir);
  store_->Delete(vm_id).IgnoreError();
  vms_.erase(vm_id);
  spdlog::info("vm.migrated_out vm={} target={} total_ms={} downtime_ms={} bytes={}", vm_id, request.target_node_id(),
               info.value("total-time", 0), info.value("downtime", 0), report.transferred_bytes());
  return report;
}

void VmManager::RunOnce() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [_, e] : vms_) entries.push_back(e);
  }
  for (const auto& e : entries) {
    if (!e->op.TryLock()) continue;  // an operation is under way; it owns the state
    std::string vm_id;
    int pid;
    VmState state;
    {
      absl::MutexLock l(&mu_);
      vm_id = e->rec.instance.vm_id();
      pid = e->rec.instance.pid();
      state = e->rec.instance.state();
    }
    if (state == ppn::types::v1::VM_STATE_RUNNING || state == ppn::types::v1::VM_STATE_MIGRATING) {
      if (!QemuAlive(pid, vm_id)) {
        std::string why = ReadFileTail(VmDir(vm_id) + "/qemu.log", 300);
        absl::MutexLock l(&mu_);
        ports_.Release(PortsOf(e->rec));
        e->rec.migration_port = 0;
        e->rec.instance.set_state(ppn::types::v1::VM_STATE_FAILED);
        e->rec.instance.set_state_message(state == ppn::types::v1::VM_STATE_MIGRATING
                                              ? "incoming migration failed; QEMU exited"
                                              : absl::StrCat("QEMU exited unexpectedly: ", why));
        e->rec.instance.set_pid(0);
        Persist(e.get());
        spdlog::warn("vm.died vm={} tenant={}", vm_id, e->rec.instance.tenant_id());
      } else if (state == ppn::types::v1::VM_STATE_MIGRATING) {
        SettleIncoming(e.get());
      }
    }
    e->op.Unlock();
  }
}

void VmManager::SettleIncoming(Entry* e) {
  std::string vm_id;
  {
    absl::MutexLock l(&mu_);
    if (e->rec.instance.state() != ppn::types::v1::VM_STATE_MIGRATING || e->rec.migration_port == 0) return;
    vm_id = e->rec.instance.vm_id();
  }
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(QmpSocketPath(VmDir(vm_id)), absl::Seconds(2));
  absl::StatusOr<nlohmann::json> st = qmp.ok() ? (*qmp)->Execute("query-status") : qmp.status();
  if (!st.ok() || st->value("status", "") != "running") return;
  absl::MutexLock l(&mu_);
  ports_.Release({e->rec.migration_port});
  e->rec.migration_port = 0;
  e->rec.instance.set_state(ppn::types::v1::VM_STATE_RUNNING);
  e->rec.instance.clear_state_message();
  Persist(e);
  spdlog::info("vm.migrated_in vm={} tenant={}", vm_id, e->rec.instance.tenant_id());
}

void VmManager::MonitorLoop() {
  absl::MutexLock l(&mu_);
  while (!stopping_) {
    stop_cv_.WaitWithTimeout(&mu_, options_.monitor_interval);
    if (stopping_) break;
    mu_.Unlock();
    RunOnce();
    mu_.Lock();
  }
}

}  // namespace ppn::host
