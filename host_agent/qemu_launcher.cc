#include "host_agent/qemu_launcher.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"

namespace ppn::host {
namespace {

// QEMU's own memory on top of the guest's (TCG translation cache, device state).
constexpr uint64_t kQemuOverheadMib = 256;

bool WriteSmallFile(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, value.data(), value.size()) == static_cast<ssize_t>(value.size());
  close(fd);
  return ok;
}

}  // namespace

std::string QmpSocketPath(const std::string& vm_dir) { return vm_dir + "/qmp.sock"; }
std::string ConsoleLogPath(const std::string& vm_dir) { return vm_dir + "/console.log"; }
std::string DiskPath(const std::string& vm_dir) { return vm_dir + "/disk.qcow2"; }
std::string SeedPath(const std::string& vm_dir) { return vm_dir + "/seed.iso"; }

std::vector<std::string> BuildQemuArgs(const LaunchSpec& spec) {
  std::vector<std::string> a = {spec.qemu_binary};
  auto add = [&a](std::initializer_list<std::string> more) { a.insert(a.end(), more); };
  // The process name carries the VM id: re-adoption checks /proc/<pid>/cmdline for it.
  add({"-name", "ppn-" + spec.vm_id, "-no-user-config", "-nodefaults", "-display", "none"});
  add({"-machine", absl::StrCat("q35,accel=", spec.kvm ? "kvm" : "tcg")});
  if (spec.kvm) add({"-cpu", "host"});
  add({"-m", absl::StrCat(spec.memory_mib), "-smp", absl::StrCat(spec.vcpus)});
  if (!spec.image.kernel.empty()) {
    add({"-kernel", spec.image.kernel});
    if (!spec.image.initrd.empty()) add({"-initrd", spec.image.initrd});
    if (!spec.image.append.empty()) add({"-append", spec.image.append});
  }
  add({"-drive", absl::StrCat("file=", DiskPath(spec.vm_dir), ",if=none,id=drive0,format=qcow2"), "-device",
       "virtio-blk-pci,drive=drive0,id=disk0"});
  add({"-drive", absl::StrCat("file=", SeedPath(spec.vm_dir), ",if=none,id=seed0,format=raw,readonly=on"), "-device",
       "virtio-blk-pci,drive=seed0,id=seed"});
  std::string netdev = "user,id=net0";
  for (const HostForward& f : spec.forwards) {
    absl::StrAppend(&netdev, ",hostfwd=", f.udp ? "udp" : "tcp", ":", f.host_address, ":", f.host_port,
                    "-:", f.guest_port);
  }
  add({"-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile="});
  add({"-device", "virtio-balloon-pci,id=balloon0"});
  add({"-chardev", absl::StrCat("file,id=serial0,append=on,path=", ConsoleLogPath(spec.vm_dir)), "-serial",
       "chardev:serial0"});
  add({"-qmp", absl::StrCat("unix:", QmpSocketPath(spec.vm_dir), ",server=on,wait=off")});
  if (spec.seccomp) {
    // Dropping to run_as_user needs one setuid after the filter is installed.
    add({"-sandbox", absl::StrCat("on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=",
                                  spec.run_as_user.empty() ? "deny" : "allow")});
  }
  if (!spec.run_as_user.empty()) add({"-runas", spec.run_as_user});
  if (!spec.incoming_uri.empty()) add({"-incoming", spec.incoming_uri});
  return a;
}

absl::StatusOr<std::string> CreateVmCgroup(const std::string& cgroup_root, const LaunchSpec& spec) {
  std::string dir = cgroup_root + "/" + spec.vm_id;
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create cgroup ", dir));
  }
  uint64_t max_bytes = (uint64_t{spec.memory_mib} + kQemuOverheadMib) << 20;
  if (!WriteSmallFile(dir + "/memory.max", absl::StrCat(max_bytes)) ||
      !WriteSmallFile(dir + "/cpu.weight", absl::StrCat(100 * spec.vcpus)) ||
      !WriteSmallFile(dir + "/pids.max", "512")) {
    rmdir(dir.c_str());
    return absl::PermissionDeniedError(absl::StrCat("cannot set limits in cgroup ", dir));
  }
  return dir;
}

absl::StatusOr<pid_t> LaunchQemu(const LaunchSpec& spec) {
  std::vector<std::string> args = BuildQemuArgs(spec);
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::string log = spec.vm_dir + "/qemu.log";
  std::string procs = spec.cgroup_dir.empty() ? "" : spec.cgroup_dir + "/cgroup.procs";
  pid_t pid = fork();
  if (pid < 0) return absl::ResourceExhaustedError("fork failed");
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    setsid();
    if (!procs.empty()) {
      int fd = open(procs.c_str(), O_WRONLY);
      if (fd < 0 || write(fd, "0", 1) != 1) _exit(126);
      close(fd);
    }
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

absl::Status RunTool(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::vector<std::string> copy = args;
  for (auto& s : copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return absl::ResourceExhaustedError("fork failed");
  if (pid == 0) {
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  std::string output;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipe_fds[0], buf, sizeof buf)) > 0) output.append(buf, n);
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    return absl::FailedPreconditionError(absl::StrCat(args[0], " is not installed (tools/setup)"));
  }
  return absl::InternalError(absl::StrCat(args[0], " failed: ", output.substr(0, 400)));
}

}  // namespace ppn::host
