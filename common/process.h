#pragma once

// ProcessSpawner: the one way PPN code starts a process, so tests can swap it for a fake
// (tests/fakes/fake_process_spawner.h). A spawned child gets /dev/null as stdin, its output
// appended to a file (or discarded, or captured by Run), optionally its own session, a cgroup
// and an unprivileged user, and no file descriptor of ours beyond 0-2.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/command_runner.h"

namespace ppn {

// The ids a child drops to before exec. Resolve them with LookupUser (getpwnam is not safe
// to call between fork and exec).
struct RunAs {
  std::string name;  // for messages
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
};

// NOT_FOUND if `user` does not exist on this machine.
absl::StatusOr<RunAs> LookupUser(const std::string& user);

// Everything that decides how one process starts.
struct SpawnSpec {
  // argv[0] is looked up on PATH unless it contains a slash.
  std::vector<std::string> argv;
  // stdout and stderr are appended to this file (created 0640); empty discards them. Ignored
  // by Run, which captures them.
  std::string output_path;
  // setsid(): signals to our process group never reach the child, and it outlives us.
  bool new_session = false;
  // A cgroup v2 directory the child joins before exec; empty for none.
  std::string cgroup_dir;
  // Drop to this user (groups, gid, uid) before exec; unset to keep ours.
  std::optional<RunAs> run_as;
  // Enter this network namespace before exec: a name under /run/netns (`ip netns add`) or a
  // path to a namespace file; empty to stay in ours.
  std::string netns;
};

// One process, ours or adopted. Thread-safe. Destroying the handle neither kills nor waits
// for the process: VMs outlive the agent that started them.
class Process {
 public:
  virtual ~Process() = default;
  virtual pid_t pid() const = 0;
  // Sends `sig`; a process that has already exited is not an error.
  virtual void Signal(int sig) = 0;
  // True until the process has exited (an exited child of ours is reaped here). Guards
  // against pid reuse: a different process under the same pid is not this one.
  virtual bool Alive() = 0;
  // Waits up to `timeout` for the process to exit; true if it has.
  virtual bool WaitForExit(absl::Duration timeout) = 0;
};

// A process found running on this machine, with its command line.
struct ProcessInfo {
  pid_t pid = 0;
  std::vector<std::string> argv;
};

// What a process run to completion did.
struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal or after the timeout
  bool timed_out = false;
  std::string output;  // stdout and stderr interleaved, at most 64 KiB
};

// Starts and finds processes. Implementations are thread-safe.
class ProcessSpawner {
 public:
  virtual ~ProcessSpawner() = default;
  // Starts `spec`. FAILED_PRECONDITION if the program is not installed or cannot be
  // executed, and for a cgroup, user or output file the child cannot take on (the message
  // says which); RESOURCE_EXHAUSTED if fork fails. The process has exec'd when this returns.
  virtual absl::StatusOr<std::unique_ptr<Process>> Spawn(const SpawnSpec& spec) = 0;
  // Runs `spec` to completion with its output captured, killing it (SIGKILL) after
  // `timeout`. Errors as Spawn; a non-zero exit is a result, not an error.
  virtual absl::StatusOr<RunResult> Run(const SpawnSpec& spec, absl::Duration timeout) = 0;
  // Every live (not zombie) process of this machine that we may inspect.
  virtual std::vector<ProcessInfo> ListProcesses() = 0;
  // A handle on a process we did not start (one found by ListProcesses after a restart).
  // NOT_FOUND if `pid` is not a live process.
  virtual absl::StatusOr<std::unique_ptr<Process>> Attach(pid_t pid) = 0;
};

// Runs `argv` to completion: OK on exit 0; FAILED_PRECONDITION "<tool> is not installed" if
// it is missing; INTERNAL "<tool> failed: <its output>" otherwise (also after `timeout`).
absl::Status RunTool(ProcessSpawner* spawner, const std::vector<std::string>& argv,
                     absl::Duration timeout = absl::Minutes(2));

// A CommandRunner (common/command_runner.h) over `spawner`: each command run to completion
// within `timeout`, its output returned; INTERNAL "<tool> failed: <output>" on a non-zero exit.
CommandRunner SpawnerCommandRunner(ProcessSpawner* spawner, absl::Duration timeout = absl::Seconds(30));

// The real spawner: fork and exec, with only async-signal-safe calls in the child. Reads
// /proc for ListProcesses and Attach.
class PosixProcessSpawner final : public ProcessSpawner {
 public:
  absl::StatusOr<std::unique_ptr<Process>> Spawn(const SpawnSpec& spec) override;
  absl::StatusOr<RunResult> Run(const SpawnSpec& spec, absl::Duration timeout) override;
  std::vector<ProcessInfo> ListProcesses() override;
  absl::StatusOr<std::unique_ptr<Process>> Attach(pid_t pid) override;
  // A process-wide instance for main.cc to inject; never used by cores directly.
  static PosixProcessSpawner* Get();
};

}  // namespace ppn
