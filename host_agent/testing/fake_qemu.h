#pragma once

// FakeQemu makes a FakeProcessSpawner behave like QEMU and its tools, for VmManager tests
// without QEMU: qemu-img and genisoimage make their output files and qemu-img info tells an
// image's size; each QEMU started serves QMP on the socket its command line names (run state
// "running", or "inmigrate" with -incoming) and exits on quit, a deadly signal, or
// system_powerdown when its guest runs. Outgoing migrations follow a script of query-migrate answers; incoming ones
// move on when the test says. Thread-safe.

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "host_agent/testing/fake_qmp_server.h"
#include "nlohmann/json.hpp"
#include "tests/fakes/fake_process_spawner.h"

namespace ppn::host::testing {

class FakeQemu {
 public:
  // Installs the hooks on `*spawner`, which must outlive this object.
  explicit FakeQemu(ppn::testing::FakeProcessSpawner* spawner);
  ~FakeQemu();

  // The pid of vm_id's live QEMU, or 0.
  pid_t Pid(const std::string& vm_id);
  // Live QEMU processes of vm_id.
  int CountAlive(const std::string& vm_id);
  // The QMP server of vm_id's live QEMU, or nullptr.
  FakeQmpServer* Qmp(const std::string& vm_id);

  // The next QEMU started exits at once, with `why` in its log.
  void FailNextStart(const std::string& why);
  // Runs in the spawner when a QEMU of vm_id is exec'd, before it answers QMP.
  void OnExec(std::function<void(const std::string& vm_id, pid_t pid)> hook);
  // What qemu-img info says of every base image.
  void set_image_bytes(uint64_t bytes);

  void SetRunState(const std::string& vm_id, const std::string& state);
  std::string RunState(const std::string& vm_id);
  // What the next query-migrate answers of an outgoing migration of vm_id say; the last one
  // repeats. "completed" leaves the guest in postmigrate. Default: one "active", then completed.
  void ScriptMigration(const std::string& vm_id, std::vector<nlohmann::json> answers);
  // An incoming migration of vm_id: a source connected ("active"), or it finished (running).
  void IncomingConnected(const std::string& vm_id);
  // Any migration status query-migrate should report ("active" for an outgoing migration that
  // no one follows any more, say).
  void SetMigrationStatus(const std::string& vm_id, const std::string& status);
  void IncomingCompleted(const std::string& vm_id);

  // Guests speak the identity channel (docs/templates.md): PPN-IDENTITY-READY to whoever
  // connects, PPN-IDENTITY-OK after an identity's "end". Off: they say nothing, as an image
  // without the channel's reader.
  void set_guests_speak_identity(bool on);
  // Guests say PPN-READY (docs/guest-channel.md) to whoever connects to their channel; off:
  // they never do, as an image that does not know the line.
  void set_guests_say_ready(bool on) {
    absl::MutexLock l(&mu_);
    say_ready_ = on;
  }
  // How many QMP system_reset vm_id's QEMUs got.
  int Resets(const std::string& vm_id) {
    absl::MutexLock l(&mu_);
    return resets_[vm_id];
  }
  // The identity messages vm_id's guests received, in order.
  std::vector<std::string> IdentitiesOf(const std::string& vm_id);

 private:
  class GuestChannel;
  struct Vm {
    pid_t pid = 0;
    std::shared_ptr<FakeQmpServer> qmp;
    std::string run_state = "running";
    std::string migration;  // query-migrate status ("" for none)
    std::vector<nlohmann::json> script;
    size_t next = 0;
    uint64_t balloon_bytes = 0;
    std::shared_ptr<GuestChannel> channel;
  };
  absl::Status Launch(const SpawnSpec& spec, pid_t pid);
  void InstallHandlers(const std::string& vm_id, FakeQmpServer* qmp);
  nlohmann::json QueryMigrate(const std::string& vm_id);

  ppn::testing::FakeProcessSpawner* const spawner_;
  absl::Mutex mu_;
  std::map<std::string, Vm> vms_ ABSL_GUARDED_BY(mu_);  // by VM id: the newest QEMU
  std::string fail_next_ ABSL_GUARDED_BY(mu_);
  uint64_t image_bytes_ ABSL_GUARDED_BY(mu_) = uint64_t{1} << 30;
  std::function<void(const std::string&, pid_t)> on_exec_ ABSL_GUARDED_BY(mu_);
  bool speak_identity_ ABSL_GUARDED_BY(mu_) = true;
  bool say_ready_ ABSL_GUARDED_BY(mu_) = true;
  std::map<std::string, int> resets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>> identities_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::host::testing
