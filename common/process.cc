#include "common/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/status_macros.h"

extern char** environ;

namespace ppn {
namespace {

constexpr size_t kMaxCapturedOutput = 64 * 1024;

// What the child reports through the exec-status pipe when it cannot become the program.
enum ChildStage : int { kStageCgroup = 1, kStageUser = 2, kStageExec = 3, kStageNetns = 4 };
struct ChildFailure {
  int stage;
  int error;
};

// State, parent pid and start time (in clock ticks since boot) from /proc/<pid>/stat.
struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  uint64_t start_ticks = 0;
};

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  absl::StatusOr<std::string> text = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!text.ok()) return std::nullopt;
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  size_t paren = text->rfind(')');
  if (paren == std::string::npos || paren + 2 >= text->size()) return std::nullopt;
  std::vector<absl::string_view> f = absl::StrSplit(absl::string_view(*text).substr(paren + 2), ' ');
  ProcStat st;
  if (f.size() < 20 || f[0].empty() || !absl::SimpleAtoi(f[1], &st.ppid) || !absl::SimpleAtoi(f[19], &st.start_ticks)) {
    return std::nullopt;
  }
  st.state = f[0][0];
  return st;
}

class PosixProcess final : public Process {
 public:
  PosixProcess(pid_t pid, bool child, uint64_t start_ticks) : pid_(pid), child_(child), start_ticks_(start_ticks) {}

  pid_t pid() const override { return pid_; }

  void Signal(int sig) override {
    if (Alive()) kill(pid_, sig);
  }

  bool Alive() override {
    absl::MutexLock l(&mu_);
    if (exited_) return false;
    if (child_) {
      int status;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return false;
      }
      if (r == 0) return true;
      // ECHILD: reaped elsewhere; fall through to /proc.
    }
    std::optional<ProcStat> st = ReadProcStat(pid_);
    if (!st || st->state == 'Z' || st->start_ticks != start_ticks_) exited_ = true;
    return !exited_;
  }

  bool WaitForExit(absl::Duration timeout) override {
    absl::Time deadline = absl::Now() + timeout;
    absl::Duration step = absl::Milliseconds(1);
    while (Alive()) {
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(step);
      step = std::min(step * 2, absl::Milliseconds(20));
    }
    return true;
  }

 private:
  const pid_t pid_;
  const bool child_;
  const uint64_t start_ticks_;
  absl::Mutex mu_;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
};

// A descriptor above 2, so that the child's dup2 onto 0-2 cannot clobber it.
int HighFd(int fd) {
  if (fd < 0 || fd > 2) return fd;
  int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return high;
}

absl::StatusOr<std::string> ResolveProgram(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("empty command");
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  // The node's tools (ip, nft, wg) live in the sbin directories, which a service manager or
  // Bazel's test environment may leave off PATH.
  std::string dirs = absl::StrCat(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin", ":/usr/sbin:/sbin");
  for (absl::string_view dir : absl::StrSplit(dirs, ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(name, " is not installed (tools/setup)"));
}

// A started child: its pid, the read end of its output pipe when captured, and its start time.
struct Started {
  pid_t pid = -1;
  int output_fd = -1;
  uint64_t start_ticks = 0;
};

// Forks and execs `spec`. Everything the child needs is prepared here, so that the child only
// makes async-signal-safe calls between fork and exec.
absl::StatusOr<Started> ForkExec(const SpawnSpec& spec, bool capture) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("empty command");
  PPN_ASSIGN_OR_RETURN(std::string program, ResolveProgram(spec.argv[0]));
  std::vector<std::string> args = spec.argv;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds_to_close[5] = {-1, -1, -1, -1, -1};
  auto close_all = [&fds_to_close] {
    for (int& fd : fds_to_close) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  };
  int null_fd = HighFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  fds_to_close[0] = null_fd;
  int out_fd = -1, read_fd = -1;
  if (capture) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
      close_all();
      return absl::ResourceExhaustedError("pipe failed");
    }
    read_fd = p[0];
    out_fd = HighFd(p[1]);
  } else if (!spec.output_path.empty()) {
    out_fd = HighFd(open(spec.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (out_fd < 0) {
      int err = errno;
      close_all();
      return absl::FailedPreconditionError(absl::StrCat("cannot open ", spec.output_path, ": ", std::strerror(err)));
    }
  } else {
    out_fd = HighFd(open("/dev/null", O_WRONLY | O_CLOEXEC));
  }
  fds_to_close[1] = out_fd;
  int cgroup_fd = -1;
  if (!spec.cgroup_dir.empty()) {
    std::string procs = spec.cgroup_dir + "/cgroup.procs";
    cgroup_fd = HighFd(open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (cgroup_fd < 0) {
      int err = errno;
      close_all();
      if (read_fd >= 0) close(read_fd);
      return absl::FailedPreconditionError(
          absl::StrCat("cannot join cgroup ", spec.cgroup_dir, ": ", std::strerror(err)));
    }
  }
  fds_to_close[2] = cgroup_fd;
  int netns_fd = -1;
  if (!spec.netns.empty()) {
    std::string ns = spec.netns.find('/') == std::string::npos ? "/run/netns/" + spec.netns : spec.netns;
    netns_fd = HighFd(open(ns.c_str(), O_RDONLY | O_CLOEXEC));
    if (netns_fd < 0) {
      int err = errno;
      close_all();
      if (read_fd >= 0) close(read_fd);
      return absl::FailedPreconditionError(
          absl::StrCat("cannot open network namespace ", spec.netns, ": ", std::strerror(err)));
    }
  }
  fds_to_close[4] = netns_fd;
  int status_pipe[2];
  if (null_fd < 0 || out_fd < 0 || pipe2(status_pipe, O_CLOEXEC) != 0) {
    close_all();
    if (read_fd >= 0) close(read_fd);
    return absl::ResourceExhaustedError("cannot prepare the child's descriptors");
  }
  int status_read = status_pipe[0];
  int status_write = HighFd(status_pipe[1]);
  fds_to_close[3] = status_write;
  const bool drop = spec.run_as.has_value();
  const uid_t uid = drop ? spec.run_as->uid : 0;
  const gid_t gid = drop ? spec.run_as->gid : 0;
  const std::vector<gid_t> groups = drop ? spec.run_as->groups : std::vector<gid_t>{};
  struct rlimit nofile;
  const int max_fd = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY
                         ? static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 65536))
                         : 65536;

  pid_t pid = fork();
  if (pid < 0) {
    close_all();
    close(status_read);
    if (read_fd >= 0) close(read_fd);
    return absl::ResourceExhaustedError("fork failed");
  }
  if (pid == 0) {
    auto fail = [status_write](int stage) {
      ChildFailure f{stage, errno};
      ssize_t ignored = write(status_write, &f, sizeof f);
      (void)ignored;
      _exit(127);
    };
    if (spec.new_session) setsid();
    if (cgroup_fd >= 0 && write(cgroup_fd, "0", 1) != 1) fail(kStageCgroup);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) fail(kStageNetns);
    dup2(null_fd, 0);
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    if (drop && (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) {
      fail(kStageUser);
    }
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // No descriptor of ours may outlive us in a child that outlives us (a listening socket
    // held by QEMU would keep the agent's port after a crash).
    if (syscall(SYS_close_range, 3u, static_cast<unsigned>(status_write - 1), 0u) != 0 ||
        syscall(SYS_close_range, static_cast<unsigned>(status_write + 1), ~0u, 0u) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) {
        if (fd != status_write) close(fd);
      }
    }
    execve(program.c_str(), argv.data(), environ);
    fail(kStageExec);
  }
  close_all();
  Started started;
  started.pid = pid;
  started.output_fd = read_fd;
  if (std::optional<ProcStat> st = ReadProcStat(pid)) started.start_ticks = st->start_ticks;
  ChildFailure failure{0, 0};
  ssize_t n;
  do {
    n = read(status_read, &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  close(status_read);
  if (n <= 0) return started;  // exec closed the pipe: the child is the program now
  waitpid(pid, nullptr, 0);
  if (read_fd >= 0) close(read_fd);
  const std::string& name = spec.argv[0];
  switch (failure.stage) {
    case kStageCgroup:
      return absl::FailedPreconditionError(
          absl::StrCat("cannot join cgroup ", spec.cgroup_dir, ": ", std::strerror(failure.error)));
    case kStageNetns:
      return absl::FailedPreconditionError(
          absl::StrCat("cannot enter network namespace ", spec.netns, ": ", std::strerror(failure.error)));
    case kStageUser:
      return absl::FailedPreconditionError(
          absl::StrCat("cannot drop to user ", spec.run_as->name, ": ", std::strerror(failure.error)));
    default:
      if (failure.error == ENOENT)
        return absl::FailedPreconditionError(absl::StrCat(name, " is not installed (tools/setup)"));
      return absl::FailedPreconditionError(absl::StrCat("cannot run ", name, ": ", std::strerror(failure.error)));
  }
}

}  // namespace

absl::StatusOr<RunAs> LookupUser(const std::string& user) {
  long size = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<size_t>(size) : 16384);
  passwd pw;
  passwd* found = nullptr;
  if (getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
    return absl::NotFoundError(absl::StrCat("user ", user, " does not exist"));
  }
  RunAs run_as;
  run_as.name = user;
  run_as.uid = pw.pw_uid;
  run_as.gid = pw.pw_gid;
  int count = 64;
  std::vector<gid_t> groups(count);
  if (getgrouplist(user.c_str(), pw.pw_gid, groups.data(), &count) < 0) {
    groups.resize(count);
    getgrouplist(user.c_str(), pw.pw_gid, groups.data(), &count);
  }
  groups.resize(count);
  run_as.groups = std::move(groups);
  return run_as;
}

absl::StatusOr<std::unique_ptr<Process>> PosixProcessSpawner::Spawn(const SpawnSpec& spec) {
  PPN_ASSIGN_OR_RETURN(Started started, ForkExec(spec, /*capture=*/false));
  return std::unique_ptr<Process>(new PosixProcess(started.pid, /*child=*/true, started.start_ticks));
}

absl::StatusOr<RunResult> PosixProcessSpawner::Run(const SpawnSpec& spec, absl::Duration timeout) {
  PPN_ASSIGN_OR_RETURN(Started started, ForkExec(spec, /*capture=*/true));
  RunResult result;
  absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (true) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration() && !result.timed_out) {
      result.timed_out = true;
      kill(started.pid, SIGKILL);
      deadline = absl::Now() + absl::Seconds(1);  // what it wrote before dying, not a grandchild's
      continue;
    }
    if (left <= absl::ZeroDuration()) break;
    pollfd p{started.output_fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(started.output_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (result.output.size() < kMaxCapturedOutput) {
      result.output.append(buf, std::min<size_t>(n, kMaxCapturedOutput - result.output.size()));
    }
  }
  close(started.output_fd);
  int status = 0;
  pid_t reaped;
  do {
    reaped = waitpid(started.pid, &status, 0);
  } while (reaped < 0 && errno == EINTR);
  if (reaped == started.pid && WIFEXITED(status) && !result.timed_out) result.exit_code = WEXITSTATUS(status);
  return result;
}

std::vector<ProcessInfo> PosixProcessSpawner::ListProcesses() {
  std::vector<ProcessInfo> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* d = readdir(proc)) {
    pid_t pid;
    if (!absl::SimpleAtoi(d->d_name, &pid) || pid <= 0) continue;
    std::optional<ProcStat> st = ReadProcStat(pid);
    if (!st || st->state == 'Z') continue;
    absl::StatusOr<std::string> cmdline = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
    if (!cmdline.ok() || cmdline->empty()) continue;  // kernel threads have none
    ProcessInfo info;
    info.pid = pid;
    if (cmdline->back() == '\0') cmdline->pop_back();
    info.argv = absl::StrSplit(*cmdline, '\0');
    out.push_back(std::move(info));
  }
  closedir(proc);
  return out;
}

absl::StatusOr<std::unique_ptr<Process>> PosixProcessSpawner::Attach(pid_t pid) {
  std::optional<ProcStat> st = pid > 0 ? ReadProcStat(pid) : std::nullopt;
  if (!st || st->state == 'Z') return absl::NotFoundError(absl::StrCat("no process ", pid));
  return std::unique_ptr<Process>(new PosixProcess(pid, /*child=*/st->ppid == getpid(), st->start_ticks));
}

PosixProcessSpawner* PosixProcessSpawner::Get() {
  static PosixProcessSpawner spawner;
  return &spawner;
}

absl::Status RunTool(ProcessSpawner* spawner, const std::vector<std::string>& argv, absl::Duration timeout) {
  SpawnSpec spec;
  spec.argv = argv;
  PPN_ASSIGN_OR_RETURN(RunResult r, spawner->Run(spec, timeout));
  if (r.exit_code == 0) return absl::OkStatus();
  if (r.timed_out) {
    return absl::InternalError(absl::StrCat(argv[0], " did not finish within ", absl::FormatDuration(timeout)));
  }
  return absl::InternalError(absl::StrCat(argv[0], " failed: ", r.output.substr(0, 400)));
}

CommandRunner SpawnerCommandRunner(ProcessSpawner* spawner, absl::Duration timeout) {
  return [spawner, timeout](const std::vector<std::string>& argv,
                            const std::string& netns) -> absl::StatusOr<std::string> {
    SpawnSpec spec;
    spec.argv = argv;
    spec.netns = netns;
    PPN_ASSIGN_OR_RETURN(RunResult r, spawner->Run(spec, timeout));
    if (r.exit_code == 0) return r.output;
    if (r.timed_out) {
      return absl::InternalError(absl::StrCat(argv[0], " did not finish within ", absl::FormatDuration(timeout)));
    }
    return absl::InternalError(absl::StrCat(argv[0], " failed: ", r.output.substr(0, 600)));
  };
}

}  // namespace ppn
