#pragma once

// FakeProcessSpawner: processes that exist only in memory, for tests of code that starts
// programs. A fake process lives until it is signalled (SIGTERM, SIGKILL, SIGINT, SIGHUP) or a
// test ends it; it outlives every handle, as a real QEMU outlives the agent that started it.
// Hooks per program name (argv[0]'s last component) decide what a spawn or a run does.
// Thread-safe. Fake pids are above any real pid_max, so a stray kill() reaches nothing.

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/process.h"

namespace ppn::testing {

class FakeProcessSpawner final : public ProcessSpawner {
 public:
  // Runs inside Spawn once the fake process has its pid; an error fails the spawn (and the
  // process never existed).
  using SpawnHook = std::function<absl::Status(const SpawnSpec& spec, pid_t pid)>;
  // Answers a Run; without a hook a run exits 0 with no output.
  using RunHook = std::function<absl::StatusOr<RunResult>(const SpawnSpec& spec)>;

  void OnSpawn(const std::string& program, SpawnHook hook);
  void OnRun(const std::string& program, RunHook hook);
  // `on_exit` runs once, outside any lock of the spawner, when fake process `pid` ends.
  void OnExit(pid_t pid, std::function<void()> on_exit);

  // A live process with `argv` that this spawner did not start (e.g. left by an earlier run).
  pid_t AddProcess(std::vector<std::string> argv);
  // Ends `pid` as if it exited by itself.
  void Exit(pid_t pid);
  bool IsAlive(pid_t pid);
  // Live processes whose argv, joined by spaces, contains `needle`.
  int CountAlive(const std::string& needle);
  // Signals `pid` received so far.
  std::vector<int> SignalsOf(pid_t pid);
  // Every spec given to Spawn / Run so far, in order.
  std::vector<SpawnSpec> spawned();
  std::vector<SpawnSpec> runs();

  absl::StatusOr<std::unique_ptr<Process>> Spawn(const SpawnSpec& spec) override;
  absl::StatusOr<RunResult> Run(const SpawnSpec& spec, absl::Duration timeout) override;
  std::vector<ProcessInfo> ListProcesses() override;
  absl::StatusOr<std::unique_ptr<Process>> Attach(pid_t pid) override;

  // Used by the handles.
  void Deliver(pid_t pid, int sig);
  bool WaitForExit(pid_t pid, absl::Duration timeout);

 private:
  struct Proc {
    std::vector<std::string> argv;
    bool alive = true;
    std::vector<int> signals;
    std::vector<std::function<void()>> on_exit;
  };
  static std::string ProgramOf(const SpawnSpec& spec);
  // Marks `pid` dead and returns its exit hooks, to be run without mu_.
  std::vector<std::function<void()>> EndLocked(pid_t pid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  pid_t next_pid_ ABSL_GUARDED_BY(mu_) = 5000000;
  std::map<pid_t, Proc> procs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, SpawnHook> spawn_hooks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, RunHook> run_hooks_ ABSL_GUARDED_BY(mu_);
  std::vector<SpawnSpec> spawned_ ABSL_GUARDED_BY(mu_);
  std::vector<SpawnSpec> runs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::testing
