#pragma once

// VmManager is the host agent's core: one real QEMU process per VM, with its copy-on-write
// disk, first-boot seed, forwarded ports, QMP socket, limits and lifecycle, surviving agent
// restarts. Pure C++ (protos as data). Thread-safe. `*store` and `*clock` must outlive it.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "host_agent/image_catalog.h"
#include "host_agent/port_allocator.h"
#include "host_agent/vm_store.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::host {

enum class KvmMode { kAuto, kOff, kSimulate };

class VmManager {
 public:
  struct Options {
    std::string node_id = "node";
    std::string state_dir;                   // vms/<id>/ per VM, agent.db
    std::string host_address = "127.0.0.1";  // forwards and migrations listen here
    uint32_t port_first = 20000;
    uint32_t port_last = 20999;
    uint64_t advertised_memory_mib = 0;  // 0: the machine's MemTotal
    uint64_t safety_margin_mib = 512;
    KvmMode kvm_mode = KvmMode::kAuto;
    std::string kvm_probe_image = "ppn-test-guest";
    absl::Duration kvm_probe_timeout = absl::Seconds(10);
    std::string qemu_binary = "qemu-system-x86_64";
    std::string qemu_user = "nobody";  // dropped to when the agent runs as root
    absl::Duration default_grace = absl::Seconds(10);
    absl::Duration monitor_interval = absl::Seconds(1);
  };

  // Progress reports of a migration; returning false asks to cancel it.
  using ProgressFn = std::function<bool(const ppn::types::v1::MigrationProgress&)>;

  VmManager(Options options, ImageCatalog catalog, VmStore* store, Clock* clock);
  // Stops the monitor. VMs keep running: they belong to the node, not to this process.
  ~VmManager();

  // Probes the node, re-adopts the QEMU processes of stored VMs (marking vanished ones
  // FAILED) and starts the monitor.
  absl::Status Start();

  // INVALID_ARGUMENT for a bad spec, NOT_FOUND for an unknown image, ALREADY_EXISTS for a
  // duplicate id, RESOURCE_EXHAUSTED without memory or ports, FAILED_PRECONDITION with
  // QEMU's words if it will not start. A failed spawn leaves no process, file or port.
  absl::StatusOr<ppn::host::v1::VmInstance> Spawn(const std::string& tenant_id, const std::string& vm_id,
                                                  const ppn::types::v1::VmSpec& spec);
  // QMP powerdown, `grace` to stop (0: the default), then SIGTERM, then SIGKILL; removes the
  // VM's files, cgroup and ports. NOT_FOUND if the VM is not on this node.
  absl::StatusOr<ppn::host::v1::VmInstance> Destroy(const std::string& vm_id, absl::Duration grace);
  std::vector<ppn::host::v1::VmInstance> List();
  ppn::host::v1::Heartbeat MakeHeartbeat();

  // FAILED_PRECONDITION unless running; INVALID_ARGUMENT for a target above the VM's memory.
  absl::StatusOr<uint64_t> SetBalloon(const std::string& vm_id, uint64_t target_mib);
  absl::StatusOr<uint64_t> GetBalloon(const std::string& vm_id, uint64_t* memory_mib);

  // Starts an identical QEMU waiting for an incoming migration.
  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> PrepareIncoming(
      const ppn::host::v1::PrepareIncomingRequest& request);
  // Live-migrates a running VM (memory and its disk overlay) to `migration_uri`, reporting
  // progress. On success the local process is stopped and its files removed; on failure the
  // VM keeps running here. Returns the final report (COMPLETED or FAILED).
  absl::StatusOr<ppn::types::v1::MigrationProgress> MigrateOut(const ppn::host::v1::MigrateOutRequest& request,
                                                               const ProgressFn& progress);

  // One monitor pass: notices dead processes and finished incoming migrations.
  void RunOnce();

  // Time from the last Spawn call's entry to QEMU's exec (the agent's own overhead).
  absl::Duration LastSpawnOverheadForTest() {
    absl::MutexLock l(&mu_);
    return last_spawn_overhead_;
  }

  bool kvm_usable() const { return kvm_usable_; }
  ppn::types::v1::KvmSupport kvm_support() const;
  const ppn::types::v1::NodeCapabilities& capabilities() const { return capabilities_; }

 private:
  struct Entry {
    absl::Mutex op;          // serializes operations (and QMP use) on this VM
    StoredVm rec;            // guarded by VmManager::mu_
    std::string cgroup_dir;  // guarded by VmManager::mu_
  };

  std::string VmDir(const std::string& vm_id) const;
  uint64_t CommittedMibLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t TotalMib() const;
  absl::Status CheckRoomLocked(uint64_t memory_mib) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Disk overlay, seed, cgroup, QEMU, QMP handshake. On error everything it made is undone
  // by the caller through Cleanup().
  absl::Status Launch(const std::string& vm_id, const ppn::types::v1::VmSpec& spec, const std::vector<uint32_t>& ports,
                      const std::string& incoming_uri, bool kvm, Entry* entry, int* pid, absl::Time* exec_time);
  void Cleanup(const std::string& vm_id, int pid, const std::vector<uint32_t>& ports, const std::string& cgroup_dir);
  absl::Status StopProcess(const std::string& vm_id, int pid, absl::Duration grace);
  std::shared_ptr<Entry> Find(const std::string& vm_id);
  // An incoming VM whose migration has finished becomes RUNNING (asks QEMU). Caller holds
  // entry->op.
  void SettleIncoming(Entry* entry);
  // SettleIncoming for every incoming VM not busy with another operation.
  void SettleAllIncoming();
  void Persist(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MonitorLoop();

  const Options options_;
  const ImageCatalog catalog_;
  VmStore* const store_;
  Clock* const clock_;
  PortAllocator ports_;

  bool kvm_usable_ = false;
  std::string kvm_reason_;
  std::string cgroup_root_;
  std::string qemu_user_;
  ppn::types::v1::NodeCapabilities capabilities_;

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> vms_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration last_spawn_overhead_ ABSL_GUARDED_BY(mu_);
  absl::CondVar stop_cv_;
  std::thread monitor_;
};

// True if `pid` is a live QEMU process of `vm_id` (reaps it if it is our exited child).
bool QemuAlive(int pid, const std::string& vm_id);

}  // namespace ppn::host
