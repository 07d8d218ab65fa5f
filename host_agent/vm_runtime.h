#pragma once

// VmRuntime does the operating-system work for one VM at a time: its files, its cgroup, its
// QEMU process and QMP connections to it. It keeps no VM state: VmManager decides, VmRuntime
// does. Thread-safe once configured. `*spawner` must outlive it.

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process.h"
#include "host_agent/image_catalog.h"
#include "host_agent/qemu_launcher.h"
#include "host_agent/qmp_client.h"
#include "host_agent/vm_files.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::host {

class VmRuntime {
 public:
  struct Options {
    std::string vms_dir;
    std::string qemu_binary = "qemu-system-x86_64";
    std::string qemu_user;                    // QEMU drops to it (-runas); empty to stay
    std::optional<RunAs> qemu_owner;          // its ids, to hand VM files over
    absl::Duration hold_after_exec_for_test;  // see VmManager::Options
    std::string tls_dir;                      // QEMU's migration credentials (LaunchSpec::tls_dir)
  };
  VmRuntime(ProcessSpawner* spawner, Options options);

  // What the node probe found; call before the first Start.
  void SetNodeFeatures(std::string cgroup_root, bool seccomp);

  VmFiles& files() { return files_; }
  const VmFiles& files() const { return files_; }
  ProcessSpawner* spawner() const { return spawner_; }

  // One QEMU to start: the VM's id, spec and image, its forwards (host_address: where QEMU
  // listens), accelerator, network namespace, and whether it is a migration target.
  struct Launch {
    std::string vm_id;
    ppn::types::v1::VmSpec spec;
    Image image;
    std::vector<HostForward> forwards;
    bool kvm = false;
    bool incoming = false;
    std::string netns;
    std::vector<TapNic> taps;    // private networks' NICs
    std::string network_config;  // the seed's network-config; empty: none
    // A template being made (memory shared into memory_file) or a clone of one (memory_file
    // mapped private, files from CreateClone on clone_disk, the template's seed_path).
    std::string memory_file;
    bool memory_shared = false;
    std::string clone_disk;
    std::string seed_path;
    std::string vmgenid = "auto";
    bool restrict_network = false;  // no way out of user-mode networking (a template's boot)
    // Boot the files already in its directory (a stopped VM started again); a clone's
    // missing seed is made anew (without user-data, which is never kept).
    bool reuse_files = false;
  };
  // Files, cgroup and QEMU, up to its first QMP answer. `*process` is set as soon as QEMU is
  // exec'd, so a caller can Discard it on error. FAILED_PRECONDITION with QEMU's words if it
  // does not start.
  absl::Status Start(const Launch& launch, std::shared_ptr<Process>* process);
  // A QMP connection to the VM's QEMU, retried until `timeout`; UNAVAILABLE at once when the
  // process has exited.
  absl::StatusOr<std::unique_ptr<QmpClient>> Connect(const std::string& vm_id, Process* process,
                                                     absl::Duration timeout);
  // QMP powerdown, `grace` to stop, then SIGTERM, then SIGKILL. INTERNAL if it survives.
  // `*graceful`: it ended within the grace period.
  absl::Status Stop(const std::string& vm_id, Process* process, absl::Duration grace, bool* graceful = nullptr);
  // Kills the process (SIGKILL) and removes the VM's files and cgroup. INTERNAL if it
  // survives SIGKILL (then nothing is removed).
  absl::Status Discard(const std::string& vm_id, Process* process);
  // The QEMU processes running for VMs of this state directory, by VM id.
  std::map<std::string, std::vector<pid_t>> FindQemus();

 private:
  ProcessSpawner* const spawner_;
  const Options options_;
  VmFiles files_;
  std::string cgroup_root_;
  bool seccomp_ = false;
};

}  // namespace ppn::host
