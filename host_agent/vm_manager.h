#pragma once

// VmManager is the host agent's core: the lifecycle of one QEMU process per VM, its memory,
// disk and ports, surviving agent crashes. The operating system is behind seams: processes
// and files (VmRuntime), QMP (qmp_migration), adoption at start (adoption). Pure C++ (protos as
// data). Thread-safe. The store, clock and spawner in `Deps` must outlive it.
//
// Crash safety: a VM's record (PENDING, with its spec) is written before its QEMU is exec'd;
// at start every QEMU running for this state directory is adopted (it has a record) or killed
// (it has none), and no second QEMU is ever exec'd for a VM id that has one.

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/process.h"
#include "host_agent/guest_readiness.h"
#include "host_agent/balloon_controller.h"
#include "host_agent/image_catalog.h"
#include "host_agent/migration_channel.h"
#include "host_agent/node_probe.h"
#include "host_agent/port_allocator.h"
#include "host_agent/qmp_client.h"
#include "host_agent/qmp_migration.h"
#include "host_agent/templates.h"
#include "host_agent/vm_network.h"
#include "host_agent/vm_runtime.h"
#include "host_agent/vm_store.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::host {

class VmManager {
 public:
  struct Options {
    std::string node_id = "node";
    std::string state_dir;                   // vms/<id>/ per VM (made absolute)
    std::string host_address = "127.0.0.1";  // forwards and migrations listen here
    uint32_t port_first = 20000;
    uint32_t port_last = 20999;
    uint64_t advertised_memory_mib = 0;  // 0: the machine's MemTotal
    uint64_t safety_margin_mib = 512;
    uint64_t advertised_disk_mib = 0;  // 0: the state directory's file system
    KvmMode kvm_mode = KvmMode::kAuto;
    std::string kvm_probe_image = "ppn-test-guest";
    absl::Duration kvm_probe_timeout = absl::Seconds(10);
    std::string qemu_binary = "qemu-system-x86_64";
    std::string qemu_user = "nobody";  // dropped to when the agent runs as root
    bool use_cgroups = true;           // false: never touch cgroup v2 (unit tests)
    absl::Duration default_grace = absl::Seconds(10);
    absl::Duration default_ready_timeout = absl::Seconds(60);
    // A booted VM is STARTING until its guest is ready (docs/guest-channel.md); one that gives
    // no sign within this long is reported RUNNING anyway, saying so in its state message.
    absl::Duration boot_timeout = absl::Minutes(5);
    // How often starting guests' channels and ports are looked at.
    absl::Duration readiness_interval = absl::Milliseconds(20);
    absl::Duration monitor_interval = absl::Seconds(1);
    absl::Duration migration_poll_interval = absl::Milliseconds(100);
    // Testing only: how long a spawn waits after QEMU's exec before it goes on, so a test
    // can kill the agent in between.
    absl::Duration hold_after_exec_for_test = absl::ZeroDuration();
    // The node's identity (PEM paths of the mesh CA, its certificate and key): QEMU
    // authenticates and encrypts every migration stream with it. Empty only in unit tests
    // (streams in clear).
    struct MigrationTls {
      std::string ca, cert, key;
    } migration_tls;
    // Templates (docs/templates.md): creates restore a saved, ready guest of their image and
    // shape, made on this node on first use; false: every create boots.
    bool templates = true;
    // Templates made at Start, in the background: "IMAGE" (1 vCPU, 128 MiB), "IMAGE@VCPUSxMIB",
    // or "all" (every catalog image, 1 vCPU, 128 MiB).
    std::vector<std::string> template_images;
    absl::Duration template_ready_timeout = absl::Seconds(120);  // its guest's boot, to ready
    absl::Duration identity_timeout = absl::Seconds(20);         // a clone's guest taking its identity
    // A template that could not be made is not tried again for this long (its creates boot).
    absl::Duration template_retry_interval = absl::Minutes(10);
    // The balloon controller (host_agent/balloon_controller.h): this often, every running
    // guest's statistics are read and its balloon set. Zero: off (balloons move only by
    // SetBalloon).
    absl::Duration balloon_interval = absl::ZeroDuration();
    absl::Duration guest_stats_interval = absl::Seconds(1);  // how often guests report them
    BalloonPolicy balloon_policy;
  };
  struct Deps {
    VmStore* store = nullptr;
    Clock* clock = nullptr;
    ProcessSpawner* spawner = nullptr;
    // Each VM's own network namespace and rules. Null: QEMU's user-mode networking in the
    // node's namespace (an operator's explicit choice; every heartbeat then says so).
    VmNetwork* network = nullptr;
    // Adds what the rest of the agent knows about the node (its WireGuard tunnel) to each
    // heartbeat; called without any lock held. Null: nothing.
    std::function<void(ppn::host::v1::Heartbeat*)> node_status;
  };

  VmManager(Options options, ImageCatalog catalog, Deps deps);
  // Stops the monitor. VMs keep running: they belong to the node, not to this process.
  ~VmManager();

  // FAILED_PRECONDITION if the QEMU user cannot reach and write the state directory. Probes
  // the node, adopts or kills every QEMU of this state directory (see DecideAdoption) and
  // starts the monitor.
  absl::Status Start();

  // Starts `vm_id` for `tenant`: INVALID_ARGUMENT for a bad spec, NOT_FOUND for an unknown
  // image, RESOURCE_EXHAUSTED without memory, disk or ports, FAILED_PRECONDITION with QEMU's
  // words if it will not start, the store's error if the record cannot be written. A failed
  // spawn leaves no process, file, port or record. Idempotent: the same tenant asking again
  // with the same spec gets the running instance (after waiting for a spawn under way);
  // ALREADY_EXISTS if the id is another tenant's, or this tenant's with another spec or as a
  // migration target; FAILED_PRECONDITION if it exists here but is not running.
  // `private_nics`: its NICs on private networks (one per spec.networks entry), which need
  // the node's network isolation (FAILED_PRECONDITION without it).
  absl::StatusOr<ppn::host::v1::VmInstance> Spawn(
      const VmId& vm_id, const TenantId& tenant, const ppn::types::v1::VmSpec& spec,
      const google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>& private_nics = {});
  // QMP powerdown, `grace` to stop (0: the default), then SIGTERM, then SIGKILL; removes the
  // VM's files, cgroup, ports and record. NOT_FOUND if the VM is not on this node.
  absl::StatusOr<ppn::host::v1::VmInstance> Destroy(const std::string& vm_id, absl::Duration grace);
  // Powers the VM off: QMP system_powerdown (ACPI), `grace` (0: the default) for the guest to
  // end, then SIGTERM, then SIGKILL. Its overlay, seed, identity and forwarded ports stay:
  // STOPPED, holding no memory. OK at once if it is STOPPED already; NOT_FOUND if absent;
  // FAILED_PRECONDITION unless RUNNING or STARTING (or a migration target or paused copy).
  absl::StatusOr<ppn::host::v1::VmInstance> Stop(const std::string& vm_id, absl::Duration grace);
  // Boots a STOPPED VM again on its overlay (a cold boot: STARTING, then RUNNING once ready).
  // OK at once if it runs; RESOURCE_EXHAUSTED without memory; FAILED_PRECONDITION if it is
  // neither stopped nor running, or QEMU will not start (then it stays STOPPED).
  absl::StatusOr<ppn::host::v1::VmInstance> StartStopped(const std::string& vm_id);
  // Reboots a running VM: QMP system_powerdown (ACPI) and `grace` for the guest to end, then
  // the same QEMU boots again; a guest that does not end in time is reset (QMP system_reset).
  // `*how` says which. Then STARTING until ready. FAILED_PRECONDITION unless RUNNING or STARTING.
  absl::StatusOr<ppn::host::v1::VmInstance> Reboot(const std::string& vm_id, absl::Duration grace, std::string* how);
  // Up to `max_bytes` of the VM's serial console log from byte `offset` on, and the offset
  // after it (`*next_offset`; the log's size when `offset` is past its end, as after a
  // restart of the log). NOT_FOUND if the VM is absent. The bytes are the guest's, unread.
  absl::StatusOr<std::string> ReadConsole(const std::string& vm_id, uint64_t offset, size_t max_bytes,
                                          uint64_t* next_offset);
  std::vector<ppn::host::v1::VmInstance> List();
  ppn::host::v1::Heartbeat MakeHeartbeat();
  // Every change of a VM's record bumps the version; WaitForChange blocks until it passes
  // `version`, `timeout` passes or the manager stops, and returns the version then.
  uint64_t version();
  uint64_t WaitForChange(uint64_t version, absl::Duration timeout);

  // The balloon's size in MiB. FAILED_PRECONDITION unless RUNNING or STARTING; INVALID_ARGUMENT for a
  // target below 16 MiB or above the VM's memory. A VM whose balloon was set by hand is left
  // alone by the balloon controller from then on (a target of its whole memory hands it back).
  absl::StatusOr<uint64_t> SetBalloon(const std::string& vm_id, uint64_t target_mib) {
    uint64_t memory_mib;
    return Balloon(vm_id, target_mib, &memory_mib);
  }
  absl::StatusOr<uint64_t> GetBalloon(const std::string& vm_id, uint64_t* memory_mib) {
    return Balloon(vm_id, std::nullopt, memory_mib);
  }

  // Starts an identical QEMU waiting for an incoming migration (MIGRATING). It removes itself
  // entirely if no stream starts within request.ready_timeout (0: the default), or if the
  // migration fails. An existing target of the same tenant that has received nothing yet is
  // replaced; errors as Spawn otherwise.
  absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> PrepareIncoming(
      const ppn::host::v1::PrepareIncomingRequest& request);
  // Live-migrates a running VM (memory and its disk overlay) to `migration_uri`, reporting
  // progress. COMPLETED: the local process is stopped and its files removed. FAILED: the VM
  // runs here again (continued if QEMU had paused it). Returns the final report.
  absl::StatusOr<ppn::types::v1::MigrationProgress> MigrateOut(const ppn::host::v1::MigrateOutRequest& request,
                                                               const ProgressFn& progress);
  // Replaces the VM's egress policy, live. INVALID_ARGUMENT for a bad policy, NOT_FOUND if
  // absent, FAILED_PRECONDITION unless it runs with a network of its own.
  // Replaces the peers of a private network's tunnel here (PrivateNetworks::SetPeers).
  absl::Status SetNetworkPeers(const ppn::host::v1::SetNetworkPeersRequest& request);
  absl::StatusOr<ppn::host::v1::VmInstance> UpdateVmNetwork(const std::string& vm_id,
                                                            const ppn::types::v1::EgressPolicy& egress);

  // Gives the running guest `memory_mib` (between its memory_mib and max_memory_mib) by
  // plugging or unplugging virtio-mem memory; returns at once (the guest moves in blocks:
  // VmInstance.memory says where it is). NOT_FOUND if absent; FAILED_PRECONDITION unless it
  // runs or if it was created without max_memory_mib; INVALID_ARGUMENT outside its range.
  absl::StatusOr<ppn::host::v1::VmInstance> ResizeVm(const std::string& vm_id, uint64_t memory_mib);

  // Continues a VM whose QEMU is paused here (a copy left by a completed outgoing migration
  // the target never took over) → RUNNING. NOT_FOUND if absent; FAILED_PRECONDITION if it is
  // not paused or is a migration target.
  absl::StatusOr<ppn::host::v1::VmInstance> ResumeVm(const std::string& vm_id);

  // One monitor pass: notices dead processes, settles incoming migrations and removes targets
  // past their ready deadline.
  void RunOnce();
  // One balloon controller pass: reads every running guest's balloon and statistics (turning
  // the guest's statistics on first) and sends the targets BalloonController decides. VMs busy
  // with another operation are skipped this time.
  void RunBalloonsOnce();

  // Time from the last Spawn call's entry to QEMU's exec (the agent's own overhead).
  absl::Duration LastSpawnOverheadForTest() {
    absl::MutexLock l(&mu_);
    return last_spawn_overhead_;
  }

  // Makes (or finds) the template creates of `image` with this shape restore from; the reason
  // it cannot otherwise (NOT_FOUND for an unknown image).
  absl::StatusOr<Template> EnsureTemplate(const std::string& image, uint32_t vcpus, uint32_t memory_mib);

  bool kvm_usable() const { return kvm_usable_; }
  ppn::types::v1::KvmSupport kvm_support() const;
  const ppn::types::v1::NodeCapabilities& capabilities() const { return capabilities_; }

 private:
  struct Entry {
    absl::Mutex op;  // serializes operations (and QMP use) on this VM
    // The rest is guarded by VmManager::mu_.
    StoredVm rec;  // migration_port != 0: an incoming target not yet settled
    std::shared_ptr<Process> process;
    bool ports_held = false;  // its ports are taken from the allocator
    uint64_t disk_virtual_bytes = 0;
    absl::Time ready_deadline = absl::InfiniteFuture();  // incoming only
    std::optional<VmLink> link;                          // its network, when isolated
    std::string migration_source;                        // incoming only: the node that may send it
    uint64_t balloon_actual_mib = 0;                     // query-balloon's last answer (0: not read)
    uint64_t balloon_target_mib = 0;                     // last target sent (0: none)
    uint64_t size_mib = 0;                               // with virtio-mem: as ResizeVm last set it
    bool balloon_by_hand = false;                        // SetBalloon was called: the controller keeps off
    bool stats_polling = false;                          // guest statistics turned on (with `op` held)
  };
  // What Spawn and PrepareIncoming share.
  struct CreateRequest {
    std::string vm_id, tenant_id;
    ppn::types::v1::VmSpec spec;
    bool incoming = false;
    bool kvm = false;
    absl::Duration ready_timeout;
    std::string migration_source;  // incoming only
    google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic> private_nics;
  };

  struct Created {
    ppn::host::v1::VmInstance vm;
    uint32_t migration_port = 0;
    std::string migration_ticket;
  };

  absl::StatusOr<Created> Create(const CreateRequest& r);
  // With `e->op` held: the answer to a create of an id that exists; nullopt when it is gone
  // (or was replaced) and the create should look again.
  absl::StatusOr<std::optional<ppn::host::v1::VmInstance>> CreateExisting(const CreateRequest& r, Entry* e);
  absl::Status ReserveLocked(const CreateRequest& r, uint64_t disk_bytes, Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Files, cgroup and QEMU, up to its first QMP answer (the process is kept in `e` either way).
  absl::Status StartQemu(const CreateRequest& r, const Image& image, Entry* e);
  // With `e->op` held: stops its QEMU (SIGKILL) and removes files, cgroup, ports and record.
  // If the record cannot be deleted the VM stays, STOPPING, and the store's error is returned.
  absl::Status Remove(Entry* e, const std::string& why);
  // With `e->op` held: removes an incoming target that has received nothing yet;
  // ALREADY_EXISTS if it is receiving or has its guest.
  absl::Status ReplaceWaitingTarget(Entry* e);
  absl::StatusOr<uint64_t> Balloon(const std::string& vm_id, std::optional<uint64_t> target_mib, uint64_t* memory_mib);

  // Templates: the parameters of a create, and the template for them (found or made).
  TemplateParams TemplateParamsFor(const Image& image, const ppn::types::v1::VmSpec& spec, bool kvm) const;
  // `wait`: make a missing template now; otherwise start making it in the background and
  // return UNAVAILABLE (the create boots meanwhile).
  absl::StatusOr<Template> TemplateFor(const Image& image, const ppn::types::v1::VmSpec& spec, bool kvm, bool wait);
  absl::StatusOr<Template> MakeTemplate(const TemplateParams& params, const std::string& key);
  // Starts `launch` as a clone of `t` and gives it its identity; `*process` as VmRuntime::Start.
  absl::Status Restore(const CreateRequest& r, VmRuntime::Launch launch, const Template& t,
                       std::shared_ptr<Process>* process);
  void MakeTemplatesAhead();

  void ProbeNode();
  absl::Status Adopt();
  // QEMU's copy of the node's identity for TLS migration streams (VmRuntime tls_dir).
  absl::Status WriteMigrationCredentials();
  // The VM's namespace, veth and rules (and its forwards into them); NOT for incoming copies'
  // migration connection, which the agent holds.
  absl::Status MakeNetwork(Entry* e);
  // With `e->op` held: a cold boot of a STOPPED VM's files (network, QEMU): STARTING.
  absl::Status BootStopped(const std::shared_ptr<Entry>& e);
  // Its taps, forwards and namespace, for VmRuntime::Start.
  void FillLaunchLocked(Entry* e, VmRuntime::Launch* launch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives each network of `nics` its tunnel to the network's other nodes (or takes over the
  // one a previous run made); a failure is logged: the VM still reaches this node's VMs.
  void MakeTunnels(const std::vector<PrivateNic>& nics);
  // Removes what MakeNetwork made (idempotent); with `e->op` held, not `mu_`.
  void DropNetwork(Entry* e);
  // The gate's hand-off: the target's connection becomes QEMU's incoming stream.
  void StartIncoming(const std::string& vm_id, int fd);
  std::shared_ptr<Entry> Find(const std::string& vm_id);
  absl::Status NotHere(const std::string& vm_id) const;
  // With `e->op` held: an incoming VM whose migration finished becomes RUNNING; one that
  // failed, or waited past its deadline without a stream, is removed.
  void SettleIncoming(Entry* e);
  void SettleAllIncoming();
  absl::Status PersistLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleasePortsLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t CommittedMibLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t TotalMib() const;
  uint64_t DiskAvailableMibLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MonitorLoop();
  // Starting guests: each booted VM is watched (GuestReadiness) until it is ready, gone or
  // past options_.boot_timeout; the readiness thread polls them all.
  struct Starting {
    std::shared_ptr<Entry> e;
    std::shared_ptr<GuestReadiness> watch;
    absl::Time since;
  };
  void WatchStartingLocked(const std::shared_ptr<Entry>& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // STARTING → RUNNING with ready_time and boot_duration; `why` goes to the log.
  void MarkReadyLocked(Entry* e, absl::Time ready, const std::string& why, const std::string& state_message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadinessLoop();
  void BalloonLoop();
  // With `e->op` and `balloon_mu_` held: one guest's reading, decision and target.
  void BalloonOne(Entry* e);
  // Sum over running VMs of memory the balloon holds, in MiB.
  uint64_t ReclaimedMibLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static ppn::types::v1::MemoryStatus MemoryOf(const Entry& e);  // with mu_ held

  const Options options_;
  const ImageCatalog catalog_;
  VmStore* const store_;
  Clock* const clock_;
  ProcessSpawner* const spawner_;
  const std::string qemu_user_;
  const std::optional<RunAs> qemu_owner_;
  VmNetwork* const network_;
  const std::function<void(ppn::host::v1::Heartbeat*)> node_status_;
  VmRuntime runtime_;
  PortAllocator ports_;
  std::unique_ptr<IncomingGate> gate_;
  TemplateStore templates_;
  std::string qemu_version_;  // part of every template key
  absl::Mutex template_mu_;   // one template made at a time
  std::thread template_maker_;
  std::vector<std::thread> template_threads_ ABSL_GUARDED_BY(mu_);  // background builds, joined at the end

  bool kvm_usable_ = false;
  ppn::types::v1::NodeCapabilities capabilities_;
  std::string cgroup_reason_;  // why VMs run without a cgroup v2 of their own ("" when they have one)

  absl::Mutex balloon_mu_;  // one balloon pass at a time
  BalloonController balloons_ ABSL_GUARDED_BY(balloon_mu_);

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> vms_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration last_spawn_overhead_ ABSL_GUARDED_BY(mu_);
  // Templates that could not be made, by key: the image, why, and when to try again.
  struct TemplateFailure {
    std::string image, why;
    absl::Time retry_after;
  };
  std::map<std::string, TemplateFailure> template_failures_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> templates_making_ ABSL_GUARDED_BY(mu_);  // keys being made in the background
  absl::CondVar stop_cv_;
  std::thread monitor_;
  std::map<std::string, Starting> starting_ ABSL_GUARDED_BY(mu_);
  std::thread readiness_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::CondVar changed_cv_;
  std::thread balloon_thread_;
};

}  // namespace ppn::host
