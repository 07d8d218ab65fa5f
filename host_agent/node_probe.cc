#include "host_agent/node_probe.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/tls_credentials.h"
#include "host_agent/qemu_launcher.h"

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

KvmProbeResult ProbeKvm(const std::string& qemu_binary, const Image& image, const std::string& work_dir,
                        const std::string& cache_file, absl::Duration timeout) {
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
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      setsid();
      freopen("/dev/null", "w", stderr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    absl::Time deadline = absl::Now() + timeout;
    bool marker = false, exited = false;
    while (absl::Now() < deadline) {
      if (absl::StrContains(Slurp(console), "PPN-PROBE-OK")) {
        marker = true;
        break;
      }
      int status;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        marker = absl::StrContains(Slurp(console), "PPN-PROBE-OK");
        break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    unlink(console.c_str());
    result.usable = marker;
    if (!marker) {
      result.reason = exited ? "QEMU could not start a guest under KVM"
                             : absl::StrCat("a guest under KVM did not boot within ", absl::FormatDuration(timeout));
    }
  }
  std::ofstream(cache_file, std::ios::trunc) << boot << "\n"
                                             << (result.usable ? "usable" : "unusable") << "\n"
                                             << result.reason << "\n";
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

bool ProbeSeccomp(const std::string& qemu_binary) {
  if (!absl::StrContains(Slurp("/proc/self/status"), "Seccomp:")) return false;
  std::string out = "/tmp/ppn-seccomp-probe-" + std::to_string(getpid());
  std::string cmd = qemu_binary + " -sandbox help > " + out + " 2>&1";
  int rc = std::system(cmd.c_str());
  (void)rc;
  std::string text = Slurp(out);
  unlink(out.c_str());
  // Built without seccomp QEMU says the option group does not exist.
  return !text.empty() && !absl::StrContains(text, "no option group") && !absl::StrContains(text, "not supported");
}

std::string ResolveQemuUser(const std::string& wanted) {
  if (wanted.empty() || geteuid() != 0) return "";
  return getpwnam(wanted.c_str()) != nullptr ? wanted : "";
}

}  // namespace ppn::host
