#include "tests/fakes/fake_process_spawner.h"

#include <signal.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppn::testing {
namespace {

class FakeProcess final : public Process {
 public:
  FakeProcess(FakeProcessSpawner* spawner, pid_t pid) : spawner_(spawner), pid_(pid) {}
  pid_t pid() const override { return pid_; }
  void Signal(int sig) override { spawner_->Deliver(pid_, sig); }
  bool Alive() override { return spawner_->IsAlive(pid_); }
  bool WaitForExit(absl::Duration timeout) override { return spawner_->WaitForExit(pid_, timeout); }

 private:
  FakeProcessSpawner* const spawner_;
  const pid_t pid_;
};

}  // namespace

std::string FakeProcessSpawner::ProgramOf(const SpawnSpec& spec) {
  if (spec.argv.empty()) return "";
  const std::string& a = spec.argv[0];
  size_t slash = a.rfind('/');
  return slash == std::string::npos ? a : a.substr(slash + 1);
}

void FakeProcessSpawner::OnSpawn(const std::string& program, SpawnHook hook) {
  absl::MutexLock l(&mu_);
  spawn_hooks_[program] = std::move(hook);
}

void FakeProcessSpawner::OnRun(const std::string& program, RunHook hook) {
  absl::MutexLock l(&mu_);
  run_hooks_[program] = std::move(hook);
}

void FakeProcessSpawner::OnExit(pid_t pid, std::function<void()> on_exit) {
  {
    absl::MutexLock l(&mu_);
    auto it = procs_.find(pid);
    if (it != procs_.end() && it->second.alive) {
      it->second.on_exit.push_back(std::move(on_exit));
      return;
    }
  }
  on_exit();  // already gone
}

pid_t FakeProcessSpawner::AddProcess(std::vector<std::string> argv) {
  absl::MutexLock l(&mu_);
  pid_t pid = next_pid_++;
  procs_[pid].argv = std::move(argv);
  return pid;
}

std::vector<std::function<void()>> FakeProcessSpawner::EndLocked(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end() || !it->second.alive) return {};
  it->second.alive = false;
  return std::move(it->second.on_exit);
}

void FakeProcessSpawner::Exit(pid_t pid) {
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock l(&mu_);
    hooks = EndLocked(pid);
  }
  for (auto& h : hooks) h();
}

bool FakeProcessSpawner::IsAlive(pid_t pid) {
  absl::MutexLock l(&mu_);
  auto it = procs_.find(pid);
  return it != procs_.end() && it->second.alive;
}

int FakeProcessSpawner::CountAlive(const std::string& needle) {
  absl::MutexLock l(&mu_);
  int n = 0;
  for (const auto& [_, p] : procs_) {
    if (p.alive && absl::StrContains(absl::StrJoin(p.argv, " "), needle)) ++n;
  }
  return n;
}

std::vector<int> FakeProcessSpawner::SignalsOf(pid_t pid) {
  absl::MutexLock l(&mu_);
  auto it = procs_.find(pid);
  return it == procs_.end() ? std::vector<int>{} : it->second.signals;
}

std::vector<SpawnSpec> FakeProcessSpawner::spawned() {
  absl::MutexLock l(&mu_);
  return spawned_;
}

std::vector<SpawnSpec> FakeProcessSpawner::runs() {
  absl::MutexLock l(&mu_);
  return runs_;
}

void FakeProcessSpawner::Deliver(pid_t pid, int sig) {
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock l(&mu_);
    auto it = procs_.find(pid);
    if (it == procs_.end() || !it->second.alive) return;
    it->second.signals.push_back(sig);
    if (sig == SIGTERM || sig == SIGKILL || sig == SIGINT || sig == SIGHUP) hooks = EndLocked(pid);
  }
  for (auto& h : hooks) h();
}

bool FakeProcessSpawner::WaitForExit(pid_t pid, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto gone = [this, pid]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = procs_.find(pid);
    return it == procs_.end() || !it->second.alive;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&gone), timeout);
}

absl::StatusOr<std::unique_ptr<Process>> FakeProcessSpawner::Spawn(const SpawnSpec& spec) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("empty command");
  SpawnHook hook;
  pid_t pid;
  {
    absl::MutexLock l(&mu_);
    spawned_.push_back(spec);
    pid = next_pid_++;
    procs_[pid].argv = spec.argv;
    auto it = spawn_hooks_.find(ProgramOf(spec));
    if (it != spawn_hooks_.end()) hook = it->second;
  }
  if (hook) {
    absl::Status s = hook(spec, pid);
    if (!s.ok()) {
      absl::MutexLock l(&mu_);
      procs_.erase(pid);
      return s;
    }
  }
  return std::unique_ptr<Process>(new FakeProcess(this, pid));
}

absl::StatusOr<RunResult> FakeProcessSpawner::Run(const SpawnSpec& spec, absl::Duration) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("empty command");
  RunHook hook;
  {
    absl::MutexLock l(&mu_);
    runs_.push_back(spec);
    auto it = run_hooks_.find(ProgramOf(spec));
    if (it != run_hooks_.end()) hook = it->second;
  }
  if (hook) return hook(spec);
  RunResult ok;
  ok.exit_code = 0;
  return ok;
}

std::vector<ProcessInfo> FakeProcessSpawner::ListProcesses() {
  absl::MutexLock l(&mu_);
  std::vector<ProcessInfo> out;
  for (const auto& [pid, p] : procs_) {
    if (p.alive) out.push_back({pid, p.argv});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Process>> FakeProcessSpawner::Attach(pid_t pid) {
  if (!IsAlive(pid)) return absl::NotFoundError(absl::StrCat("no process ", pid));
  return std::unique_ptr<Process>(new FakeProcess(this, pid));
}

}  // namespace ppn::testing
