#pragma once

// Registry is the fleet's state: its nodes (capacity, liveness and what each last reported),
// its VM records (durable in VmStore), the reservations of creates in flight, the relay ports
// each VM holds and the placement index over all of it. It keeps its indexes consistent with
// each other and decides nothing: FleetCore (requests) and Reconciler (heartbeats) do. (That
// every forwarded port of a VM that exists holds a relay port is such an invariant: Put keeps
// it, whoever wrote the record.) Pure C++. Not thread-safe: FleetCore holds its one lock around
// every use. `*store` must outlive it.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fleet/placement.h"
#include "fleet/placement_index.h"
#include "fleet/relay_ports.h"
#include "fleet/vm_store.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::fleet {

// One VM as a node's last heartbeat reported it (its spec left out).
struct Reported {
  ppn::host::v1::VmInstance vm;
  // The guest runs there (not a paused or an incoming copy).
  bool Live() const {
    return !vm.migrated_out() &&
           (vm.state() == ppn::types::v1::VM_STATE_RUNNING || vm.state() == ppn::types::v1::VM_STATE_STARTING);
  }
  // An incoming migration target that has not taken over yet.
  bool Incoming() const { return !vm.migrated_out() && vm.state() == ppn::types::v1::VM_STATE_MIGRATING; }
};

struct NodeEntry {
  ppn::fleet::v1::Node node;                 // node.node_id() empty: known only from a VM record, never registered
  absl::Time joined = absl::InfinitePast();  // registered (this run of the fleet)
  absl::Time last_heartbeat = absl::InfinitePast();
  absl::Duration interval;
  bool revoked = false;
  std::set<std::string> vm_ids;              // records whose node_id is this node
  std::map<std::string, Reported> reported;  // by vm_id, from its last heartbeat
  uint64_t reserved_memory_mib = 0;          // held by creates in flight on it
  uint64_t reserved_disk_mib = 0;
  bool registered() const { return !node.node_id().empty(); }
  // Its reports are current (it heartbeats on time).
  bool reporting() const { return node.state() == ppn::fleet::v1::NODE_STATE_ALIVE; }
};

struct VmEntry {
  StoredVm stored;  // durable
  // The rest is rebuilt at start.
  bool create_in_flight = false;  // a CreateVm call is spawning it now
  // When its create call ended (or the fleet loaded it): until its node reports it, only that
  // node's heartbeats received from then on may settle it (Reconciler R9).
  absl::Time settle_after = absl::InfinitePast();
  int migrated_out_beats = 0;  // consecutive heartbeats showing only a paused copy of it
  // Consecutive heartbeats of another node running it while its recorded node is alive and has
  // no paused copy: a live migration the scheduler is about to record (Reconciler R6).
  int elsewhere_beats = 0;
  const ppn::fleet::v1::VmRecord& record() const { return stored.record; }
  ppn::fleet::v1::VmRecord& record() { return stored.record; }
};

class Registry {
 public:
  explicit Registry(VmStore* store) : store_(store) {}

  // Gives every forwarded port of every VM that exists a relay port of FIRST-LAST, shown with
  // `address` (ForwardedPort.public_address/public_port). Call before Load; without it records
  // carry no relay ports.
  void ConfigureRelay(std::string address, uint32_t first, uint32_t last);
  bool relay_enabled() const { return relay_pool_.enabled(); }
  // Relay ports a VM of `spec` needs that are not free now (0 without a relay).
  size_t RelayShortfall(const ppn::types::v1::VmSpec& spec) const;
  const RelayPortPool& relay_pool() const { return relay_pool_; }

  // Loads every record; PENDING ones hold a reservation on their node until settled. With a
  // relay, every record of a VM that exists keeps its relay ports (one outside the range, or
  // held twice, is replaced) and gets one for each forwarded port that has none.
  absl::Status Load(absl::Time now);

  // Nodes. Node() is nullptr for an unknown id; UpsertNode() makes an unregistered entry.
  NodeEntry* Node(const std::string& node_id);
  NodeEntry& UpsertNode(const std::string& node_id);
  std::map<std::string, NodeEntry>& nodes() { return nodes_; }
  // Sets a node's catalog (from its heartbeat) and keeps the union of offered images.
  void SetImages(const std::string& node_id, std::vector<std::string> images);
  void Revoke(const std::string& node_id);
  // Sets whether placement may choose `node_id` (an operator's cordon; persisted by the caller).
  void SetCordon(const std::string& node_id, bool cordoned, const std::string& reason);
  // True if no node reports a catalog (older agents), or some non-revoked node offers `image`.
  bool Offered(const std::string& image) const;
  // Replaces what `node_id` last reported.
  void SetReports(const std::string& node_id, std::map<std::string, Reported> reports);
  // The nodes whose current report (ALIVE) includes `vm_id`, with what they said.
  std::vector<std::pair<std::string, Reported>> ReportsOf(const std::string& vm_id) const;

  // VM records.
  VmEntry* Vm(const std::string& vm_id);
  std::map<std::string, VmEntry>& vms() { return vms_; }
  // The VM `tenant_id` created with `request_id`, or nullptr.
  VmEntry* ByRequest(const std::string& tenant_id, const std::string& request_id);
  // Inserts or replaces a record (not yet durable: call Put).
  VmEntry& Insert(StoredVm vm);
  // Makes the record of `vm_id` durable and keeps the per-node and request indexes. A record
  // of a VM that exists gets a relay port for each of its port forwards that has none (logged
  // when the range is full); a DESTROYED one gives its relay ports back.
  absl::Status Put(const std::string& vm_id);
  // Removes a record (a create that never happened) and its reservation.
  absl::Status Erase(const std::string& vm_id);

  // Reservations of creates in flight (and unsettled PENDING records).
  void Reserve(const std::string& vm_id, const std::string& node_id, uint64_t memory_mib, uint64_t disk_mib);
  void Release(const std::string& vm_id);

  // Brings the placement index up to date for one node.
  void Reindex(const std::string& node_id);
  Decision Place(const PlacementRequest& request, bool explain) const;
  // Every registered node as listed, with its reservations.
  std::vector<ppn::fleet::v1::Node> ListNodes() const;

  // The record as callers see it: UNKNOWN while its node is unreachable; `network` from its
  // node's last report of it.
  ppn::fleet::v1::VmRecord View(const ppn::fleet::v1::VmRecord& record) const;
  ppn::types::v1::VmState VisibleState(const ppn::fleet::v1::VmRecord& record) const;
  // The relay's route table (observe_time unset): every relay port of every VM that exists,
  // leading to the port its node forwards while the VM may be serving there.
  ppn::fleet::v1::WatchRelayRoutesResponse RelayTable() const;

  // Change notification (WatchVm): every change bumps the version. `mu` is the lock the
  // caller holds around this registry.
  void Changed();
  uint64_t version() const { return version_; }
  void WaitForChange(absl::Mutex* mu, uint64_t version, absl::Time deadline);

 private:
  struct Reservation {
    std::string node_id;
    uint64_t memory_mib;
    uint64_t disk_mib;
  };
  NodeView ViewOf(const std::string& node_id, const NodeEntry& n) const;
  void Index(const std::string& vm_id);
  // Brings `e`'s relay ports in line with the pool and its forwarded ports (see Put); true if
  // they changed. Forwarded ports are stored without relay addresses (View adds them).
  bool SyncRelay(VmEntry& e);

  VmStore* const store_;
  std::map<std::string, NodeEntry> nodes_;
  std::map<std::string, VmEntry> vms_;                                     // by vm_id: time-ordered ids
  std::map<std::string, std::string> indexed_node_;                        // vm_id -> node in NodeEntry::vm_ids
  std::map<std::pair<std::string, std::string>, std::string> by_request_;  // (tenant, request_id) -> vm_id
  std::map<std::string, Reservation> reservations_;                        // by vm_id
  std::map<std::string, std::set<std::string>> reporters_;                 // vm_id -> nodes reporting it
  std::map<std::string, std::vector<std::string>> images_;                 // node -> its catalog
  std::map<std::string, int> offered_;                                     // image -> non-revoked nodes
  int catalog_nodes_ = 0;                                                  // nodes that report a catalog
  PlacementIndex placement_;
  RelayPortPool relay_pool_;
  std::string relay_address_;
  uint64_t version_ = 0;
  absl::CondVar changed_cv_;
};

}  // namespace ppn::fleet
