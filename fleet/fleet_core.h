#pragma once

// FleetCore is the fleet's typed core: the node registry (fed by heartbeats), the VM
// registry (durable in VmStore, reconciled with what nodes report), placement with
// reservations for creates in flight, delegation to host agents, TTL expiry.
// Pure C++ (protos as data). Thread-safe. Every pointer in Deps must outlive it.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/random.h"
#include "fleet/agent_client.h"
#include "fleet/placement.h"
#include "fleet/placement_index.h"
#include "fleet/vm_store.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::fleet {

// Whose VMs a call may see: one tenant's, or (operator, scheduler) everyone's.
struct Scope {
  std::optional<std::string> tenant_id;
  bool Sees(const std::string& owner) const { return !tenant_id.has_value() || *tenant_id == owner; }
};

struct CreateResult {
  ppn::fleet::v1::VmRecord vm;
  Decision decision;
};

class FleetCore {
 public:
  struct Deps {
    VmStore* store;
    AgentClientFactory* agents;
    Clock* clock;
    RandomSource* random;
  };
  struct Options {
    // Heartbeat interval asked of agents; a node silent for three is unreachable.
    absl::Duration heartbeat_interval = absl::Seconds(10);
  };

  FleetCore(Deps deps, Options options) : deps_(deps), options_(options) {}

  // Loads the VM registry from the store.
  absl::Status Load();

  // Registers a node (configuration or a ledger node.join); idempotent.
  void AddNode(const std::string& node_id, const std::string& agent_address);
  // Marks a node revoked: it is never again a placement target.
  void RevokeNode(const std::string& node_id);
  std::vector<std::pair<std::string, std::string>> NodeAddresses();

  // Applies a node's heartbeat: capacity, liveness, and reconciliation of its VMs (adopts
  // VMs the store lacks, with the tenant the node echoes; marks LOST those it no longer has).
  void OnHeartbeat(const ppn::host::v1::Heartbeat& heartbeat);
  // Liveness (three missed intervals → UNREACHABLE) and TTL expiry.
  void RunOnce();

  // Places and spawns a VM for `tenant_id`. INVALID_ARGUMENT, ALREADY_EXISTS (display name),
  // RESOURCE_EXHAUSTED (no node has room; the message explains every node), or the agent's
  // error after one retry on the next candidate.
  absl::StatusOr<CreateResult> CreateVm(const std::string& tenant_id, const ppn::types::v1::VmSpec& spec,
                                        const std::string& request_id);
  // NOT_FOUND if absent or outside the scope.
  absl::StatusOr<ppn::fleet::v1::VmRecord> GetVm(const Scope& scope, const std::string& vm_id);
  absl::StatusOr<ppn::fleet::v1::ListVmsResponse> ListVms(const Scope& scope, const ppn::fleet::v1::ListVmsRequest& r);
  // UNAVAILABLE if the VM's node is unreachable (retry later).
  absl::StatusOr<ppn::fleet::v1::VmRecord> DestroyVm(const Scope& scope, const std::string& vm_id);
  std::vector<ppn::fleet::v1::Node> ListNodes();
  Decision Explain(const ppn::types::v1::VmSpec& spec, const std::set<std::string>& excluded);
  // ABORTED if the VM is no longer on `source`.
  absl::StatusOr<ppn::fleet::v1::VmRecord> RecordMigration(const ppn::fleet::v1::RecordMigrationRequest& r);
  absl::StatusOr<ppn::fleet::v1::VmRecord> SetPin(const std::string& vm_id, const std::string& node_id);

  // Blocks until the registry changes after `version` or `timeout` passes; returns the version.
  uint64_t WaitForChange(uint64_t version, absl::Duration timeout);
  uint64_t version();

 private:
  struct NodeEntry {
    ppn::fleet::v1::Node node;
    absl::Time last_heartbeat = absl::InfinitePast();
    absl::Duration interval;
    bool revoked = false;
    std::set<std::string> vm_ids;  // records whose node_id is this node
  };
  struct Reservation {
    std::string node_id;
    uint64_t memory_mib;
  };

  std::vector<NodeView> NodeViewsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  NodeView ViewOfLocked(const std::string& node_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brings the placement index up to date for one node (after a heartbeat, a state change or
  // a reservation).
  void ReindexLocked(const std::string& node_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Decision PlaceLocked(const ppn::types::v1::VmSpec& spec, const std::set<std::string>& excluded, bool explain) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The record as callers see it: UNKNOWN while its node is unreachable.
  ppn::fleet::v1::VmRecord ViewLocked(const ppn::fleet::v1::VmRecord& record) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Persists the record of `vm_id` (or deletes it if gone) and keeps the per-node index.
  absl::Status PutLocked(const std::string& vm_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ChangedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewVmId();

  const Deps deps_;
  const Options options_;
  absl::Mutex mu_;
  absl::CondVar changed_cv_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, NodeEntry> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, StoredVm> vms_ ABSL_GUARDED_BY(mu_);              // by vm_id: time-ordered ids
  std::map<std::string, Reservation> reservations_ ABSL_GUARDED_BY(mu_);  // by vm_id
  std::map<std::string, std::string> indexed_node_ ABSL_GUARDED_BY(mu_);
  PlacementIndex placement_ ABSL_GUARDED_BY(mu_);  // vm_id -> node in NodeEntry::vm_ids
};

}  // namespace ppn::fleet
