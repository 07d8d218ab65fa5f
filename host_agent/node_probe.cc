#include "host_agent/node_probe.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"

namespace ppn::host {
namespace {

std::string Slurp(const std::string& path) { return ReadFile(path).value_or(""); }

std::string BootId() { return std::string(absl::StripAsciiWhitespace(Slurp("/proc/sys/kernel/random/boot_id"))); }

// A limit and current usage in bytes; a missing or "max" value is no limit.
struct CgroupMemory {
  uint64_t limit = UINT64_MAX;
  uint64_t usage = 0;
};

uint64_t ParseBytes(const std::string& text, uint64_t otherwise) {
  uint64_t v;
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &v) ? v : otherwise;
}

// The tightest memory limit among the cgroups this process is in. Each cgroup is looked up
// both at its path (a host's full tree) and at the mount root (a container sees only its own
// cgroup there, while /proc/self/cgroup may still name the host's path).
CgroupMemory ReadCgroupMemory(const std::string& proc, const std::string& cgroup_fs) {
  CgroupMemory best;
  auto consider = [&](const std::string& dir, const char* limit_file, const char* usage_file) {
    absl::StatusOr<std::string> limit = ReadFile(dir + "/" + limit_file);
    if (!limit.ok()) return;
    uint64_t bytes = ParseBytes(*limit, UINT64_MAX);
    if (bytes < best.limit) best = {bytes, ParseBytes(Slurp(dir + "/" + usage_file), 0)};
  };
  for (absl::string_view line : absl::StrSplit(Slurp(proc + "/self/cgroup"), '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    std::string path = f[2] == "/" ? "" : f[2];
    if (f[0] == "0" && f[1].empty()) {  // v2 unified hierarchy
      consider(cgroup_fs + path, "memory.max", "memory.current");
      consider(cgroup_fs, "memory.max", "memory.current");
    } else if (absl::StrContains(absl::StrCat(",", f[1], ","), ",memory,")) {  // v1
      consider(cgroup_fs + "/memory" + path, "memory.limit_in_bytes", "memory.usage_in_bytes");
      consider(cgroup_fs + "/memory", "memory.limit_in_bytes", "memory.usage_in_bytes");
    }
  }
  return best;
}

}  // namespace

MemoryInfo ReadMemoryInfo(const std::string& proc, const std::string& cgroup_fs) {
  MemoryInfo info;
  std::istringstream in(Slurp(proc + "/meminfo"));
  std::string key;
  uint64_t kib;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") info.total_mib = kib / 1024;
    if (key == "MemAvailable:") info.available_mib = kib / 1024;
  }
  CgroupMemory cg = ReadCgroupMemory(proc, cgroup_fs);
  if (cg.limit != UINT64_MAX) {
    uint64_t limit_mib = cg.limit >> 20;
    uint64_t free_mib = cg.limit > cg.usage ? (cg.limit - cg.usage) >> 20 : 0;
    info.total_mib = std::min(info.total_mib, limit_mib);
    info.available_mib = std::min(info.available_mib, free_mib);
  }
  return info;
}

uint32_t CpuCount() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<uint32_t>(n) : 1;
}

double LoadAverage() {
  double load = 0;
  std::istringstream(Slurp("/proc/loadavg")) >> load;
  return load;
}

KvmProbeResult ProbeKvm(ProcessSpawner* spawner, const std::string& qemu_binary, const Image& image,
                        const std::string& work_dir, const std::string& cache_file, absl::Duration timeout) {
  std::string boot = BootId();
  std::string cached = Slurp(cache_file);
  std::vector<std::string> parts = absl::StrSplit(cached, absl::MaxSplits('\n', 2));
  if (parts.size() >= 2 && parts[0] == boot) {
    return {parts[1] == "usable", parts.size() > 2 ? std::string(absl::StripAsciiWhitespace(parts[2])) : ""};
  }
  KvmProbeResult result;
  if (access("/dev/kvm", R_OK | W_OK) != 0) {
    result.reason = "/dev/kvm is missing or not accessible";
  } else if (image.kernel.empty()) {
    result.reason = absl::StrCat("probe image ", image.name, " has no kernel to boot");
  } else {
    std::string console = work_dir + "/kvm-probe.console";
    unlink(console.c_str());
    std::vector<std::string> args = {qemu_binary,
                                     "-machine",
                                     "q35,accel=kvm",
                                     "-cpu",
                                     "host",
                                     "-m",
                                     "128",
                                     "-nodefaults",
                                     "-no-user-config",
                                     "-display",
                                     "none",
                                     "-no-reboot",
                                     "-kernel",
                                     image.kernel,
                                     "-initrd",
                                     image.initrd,
                                     "-append",
                                     "console=ttyS0 quiet ppn.probe",
                                     "-chardev",
                                     "file,id=s0,path=" + console,
                                     "-serial",
                                     "chardev:s0"};
    SpawnSpec spec;
    spec.argv = std::move(args);
    spec.new_session = true;
    absl::StatusOr<std::unique_ptr<Process>> qemu = spawner->Spawn(spec);
    absl::Time deadline = absl::Now() + timeout;
    bool marker = false, exited = !qemu.ok();
    while (!exited && absl::Now() < deadline) {
      if (absl::StrContains(Slurp(console), "PPN-PROBE-OK")) {
        marker = true;
        break;
      }
      if (!(*qemu)->Alive()) {
        exited = true;
        marker = absl::StrContains(Slurp(console), "PPN-PROBE-OK");
        break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (qemu.ok() && !exited) {
      (*qemu)->Signal(SIGKILL);
      (*qemu)->WaitForExit(absl::Seconds(5));
    }
    unlink(console.c_str());
    result.usable = marker;
    if (!marker) {
      result.reason = exited ? "QEMU could not start a guest under KVM"
                             : absl::StrCat("a guest under KVM did not boot within ", absl::FormatDuration(timeout));
    }
  }
  WriteFileAtomically(cache_file,
                      absl::StrCat(boot, "\n", result.usable ? "usable" : "unusable", "\n", result.reason, "\n"))
      .IgnoreError();  // only a cache: the next start probes again
  return result;
}

CgroupProbeResult ProbeCgroup(const std::string& node_id) {
  // Find the cgroup v2 mount (pure v2 at /sys/fs/cgroup, or hybrid at .../unified).
  std::istringstream mounts(Slurp("/proc/mounts"));
  std::string line, mount_point;
  while (std::getline(mounts, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 2 && f[2] == "cgroup2") {
      mount_point = f[1];
      break;
    }
  }
  if (mount_point.empty()) return {"", "no cgroup v2 hierarchy mounted"};
  std::string controllers = Slurp(mount_point + "/cgroup.controllers");
  for (const char* c : {"memory", "cpu", "pids"}) {
    if (!absl::StrContains(controllers, c)) {
      return {"", absl::StrCat("cgroup v2 at ", mount_point, " lacks the ", c, " controller")};
    }
  }
  std::string root = mount_point + "/ppn-" + node_id;
  if (mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) {
    return {"", absl::StrCat("cannot create ", root)};
  }
  FILE* f = std::fopen((root + "/cgroup.subtree_control").c_str(), "w");
  bool ok = f != nullptr && std::fputs("+memory +cpu +pids", f) >= 0;
  if (f != nullptr) ok = (std::fclose(f) == 0) && ok;
  if (!ok) return {"", absl::StrCat("cannot enable memory, cpu and pids controllers in ", root)};
  return {root, ""};
}

bool ProbeSeccomp(ProcessSpawner* spawner, const std::string& qemu_binary) {
  if (!absl::StrContains(Slurp("/proc/self/status"), "Seccomp:")) return false;
  SpawnSpec help;
  help.argv = {qemu_binary, "-sandbox", "help"};
  absl::StatusOr<RunResult> r = spawner->Run(help, absl::Seconds(10));
  const std::string text = r.ok() ? r->output : "";
  // Built without seccomp QEMU says the option group does not exist.
  return !text.empty() && !absl::StrContains(text, "no option group") && !absl::StrContains(text, "not supported");
}

absl::Status CheckQemuUserAccess(ProcessSpawner* spawner, const RunAs& user, const std::string& dir) {
  std::filesystem::path abs = std::filesystem::absolute(dir).lexically_normal();
  std::string probe = (abs / ".qemu-access-probe").string();
  std::error_code ec;
  std::filesystem::remove_all(probe, ec);
  if (mkdir(probe.c_str(), 0700) != 0 || chown(probe.c_str(), user.uid, user.gid) != 0) {
    std::filesystem::remove_all(probe, ec);
    return absl::FailedPreconditionError(absl::StrCat("cannot prepare ", probe, " to check QEMU's access"));
  }
  // Run as the user itself: only the kernel knows every rule (modes, ACLs, mount options).
  SpawnSpec check;
  check.argv = {"sh", "-c",
                "probe=$1; shift; for d in \"$@\"; do [ -x \"$d\" ] || { echo \"$d\"; exit 1; }; done; "
                ": 2>/dev/null >\"$probe/w\" || exit 2; rm -f \"$probe/w\"",
                "sh", probe};
  std::filesystem::path prefix;
  for (const auto& part : abs) {
    prefix /= part;
    check.argv.push_back(prefix.string());
  }
  check.run_as = user;
  absl::StatusOr<RunResult> r = spawner->Run(check, absl::Seconds(10));
  std::filesystem::remove_all(probe, ec);
  if (!r.ok()) return r.status();
  if (r->exit_code == 0) return absl::OkStatus();
  if (r->exit_code == 1) {
    std::string blocked(absl::StripAsciiWhitespace(r->output));
    struct stat st;
    char mode[24] = "";
    if (stat(blocked.c_str(), &st) == 0) std::snprintf(mode, sizeof mode, " (mode %04o)", st.st_mode & 07777);
    return absl::FailedPreconditionError(absl::StrCat("QEMU runs as ", user.name, ", which cannot enter ", blocked,
                                                      mode, ": every directory above the state directory ",
                                                      abs.string(), " must be searchable by it (chmod o+x ", blocked,
                                                      ", or choose another --state_dir)"));
  }
  return absl::FailedPreconditionError(absl::StrCat("QEMU runs as ", user.name, ", which cannot write in ",
                                                    abs.string(), " (exit ", r->exit_code, ": ", r->output, ")"));
}

NodeFeatures ProbeNodeFeatures(ProcessSpawner* spawner, const NodeFeatureProbe& probe) {
  NodeFeatures f;
  if (probe.kvm_mode == KvmMode::kAuto) {
    KvmProbeResult kvm = probe.kvm_probe_image != nullptr
                             ? ProbeKvm(spawner, probe.qemu_binary, *probe.kvm_probe_image, probe.state_dir,
                                        probe.state_dir + "/kvm-probe", probe.kvm_probe_timeout)
                             : KvmProbeResult{false, "no KVM probe image in the catalog"};
    f.kvm_usable = kvm.usable;
    f.kvm_reason = kvm.reason;
  } else {
    f.kvm_reason = probe.kvm_mode == KvmMode::kOff ? "disabled by --kvm=off"
                                                   : "simulated for placement (--kvm=simulate); guests run under TCG";
  }
  CgroupProbeResult cgroup =
      probe.use_cgroups ? ProbeCgroup(probe.node_id) : CgroupProbeResult{"", "disabled by the agent's options"};
  f.cgroup_root = cgroup.root;
  f.cgroup_reason = cgroup.reason;
  f.seccomp = ProbeSeccomp(spawner, probe.qemu_binary);
  return f;
}

std::string ResolveQemuUser(const std::string& wanted) {
  if (wanted.empty() || geteuid() != 0) return "";
  return getpwnam(wanted.c_str()) != nullptr ? wanted : "";
}

}  // namespace ppn::host
