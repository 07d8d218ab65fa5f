#pragma once

// FleetCore is the fleet's typed core: what callers ask of the fleet (create, destroy, get,
// list, explain, record a migration, pin, change a VM's network) and what drives it (heartbeats, the periodic pass:
// liveness, TTL expiry and the calls reconciliation asks of nodes). Its state lives in a
// Registry; heartbeats are applied by a Reconciler (reconciler.h has the rules); lifecycle
// events go to the ledger through a LifecycleLog. Pure C++ (protos as data). Thread-safe: one
// lock, never held across a call to a node. Every pointer in Deps must outlive it.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/ledger_outbox.h"
#include "common/random.h"
#include "fleet/agent_client.h"
#include "fleet/lifecycle_log.h"
#include "fleet/placement.h"
#include "fleet/private_networks.h"
#include "fleet/reconciler.h"
#include "fleet/registry.h"
#include "fleet/vm_query.h"
#include "fleet/vm_store.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::fleet {

// Whose VMs a call may see: one tenant's, or (operator, scheduler) everyone's. An operator
// naming a tenant (GetVmRequest.tenant_id) gets that tenant's scope.
struct Scope {
  std::optional<std::string> tenant_id;
  bool Sees(const std::string& owner) const { return !tenant_id.has_value() || *tenant_id == owner; }
};

struct CreateResult {
  ppn::fleet::v1::VmRecord vm;
  Decision decision;
  bool replayed = false;  // the request_id named an earlier create: nothing new was made
};

// The shortage behind a RESOURCE_EXHAUSTED of CreateVm (kNone for any other status), for the
// adapter's `ppn-shortage` trailing metadata.
Shortage ShortageOf(const absl::Status& status);

class FleetCore {
 public:
  struct Deps {
    VmStore* store;
    AgentClientFactory* agents;
    Clock* clock;
    RandomSource* random;
    LedgerOutbox* ledger = nullptr;  // where lifecycle entries are spooled; nullptr: not recorded
  };
  struct Options {
    // Heartbeat interval asked of agents; a node silent for three is unreachable.
    absl::Duration heartbeat_interval = absl::Seconds(10);
    // The relay's address as tenants reach it (--relay_address) and its ports
    // (--relay_ports=FIRST-LAST). Empty address: no relay, and records carry no relay ports.
    std::string relay_address;
    uint32_t relay_first_port = 0;
    uint32_t relay_last_port = 0;
    // Tenants' private networks are /24s of this (--private_network_pool); must be valid
    // (NetworkPool::Make), or no network can be created.
    std::string private_network_pool = "10.214.0.0/16";
    // The key ListVms page tokens are signed with (vm_query.h); empty: 32 random bytes, so a
    // token from before a restart is refused (the caller lists again from the first page).
    std::string page_token_key;
  };

  FleetCore(Deps deps, Options options);

  // Loads the VM registry from the store. PENDING records are settled by their node's next
  // heartbeat (adopted or FAILED).
  absl::Status Load();

  // Registers a node (configuration or a ledger node.join); idempotent.
  void AddNode(const std::string& node_id, const std::string& agent_address);
  // Marks a node revoked: it is never again a placement target.
  void RevokeNode(const std::string& node_id);
  // Cordons `node_id` (no new VMs, no incoming migrations) or lifts it; durable, and recorded
  // in the ledger (node.cordon / node.uncordon, with `role`, the caller's). Returns the node.
  // NOT_FOUND for a node the fleet does not know, INVALID_ARGUMENT for a reason over 200
  // characters or with control characters.
  absl::StatusOr<ppn::fleet::v1::Node> SetCordon(const std::string& node_id, bool cordoned, const std::string& reason,
                                                 const std::string& role);
  std::vector<std::pair<std::string, std::string>> NodeAddresses();

  // Applies a node's heartbeat (Reconciler) and queues the calls it asks of nodes.
  void OnHeartbeat(const ppn::host::v1::Heartbeat& heartbeat);
  // Liveness (three missed intervals → UNREACHABLE), TTL expiry, and the queued node calls.
  void RunOnce();

  // Places and spawns a VM for `tenant_id`. INVALID_ARGUMENT (the spec; an image no node
  // offers: "image X is not offered"), ALREADY_EXISTS (display name; a request_id used for a
  // different spec), RESOURCE_EXHAUSTED (no node has room: ShortageOf says which; the message
  // explains every node; also when the relay has no port left for the VM's port forwards). A
  // request_id this tenant used before returns that VM, replayed. `chosen_id` (optional) is the
  // tenant's id for the VM (VmRecord.name; ValidateChosenVmId, INVALID_ARGUMENT otherwise):
  // ALREADY_EXISTS "vm X already exists" if one of the tenant's VMs that exist has it; the
  // spec's display_name defaults to it. The record's vm_id is generated either way.
  // When a node's answer is lost (UNAVAILABLE) the attempt is fenced (DestroyVm there) before
  // one retry on the next candidate; if the fence fails too the VM stays PENDING on that node
  // for reconciliation and the answer is UNAVAILABLE.
  absl::StatusOr<CreateResult> CreateVm(const std::string& tenant_id, const ppn::types::v1::VmSpec& spec,
                                        const std::string& request_id, const std::string& chosen_id = "");
  // Waits until VM `vm_id` is RUNNING (its guest ready) and returns it; DEADLINE_EXCEEDED at
  // `deadline` (the VM stays as it is); FAILED_PRECONDITION if it ends anywhere but RUNNING
  // (FAILED, LOST, STOPPED, DESTROYED). NOT_FOUND as GetVm.
  absl::StatusOr<ppn::fleet::v1::VmRecord> WaitForReady(const Scope& scope, const std::string& vm_id,
                                                        absl::Time deadline);
  // Every call below that takes a `vm_id` takes the VM's name (VmRecord.name) as well: the id
  // first, then the name among the scope's VMs (the one that exists, else the latest
  // destroyed). NOT_FOUND "vm X not found" if absent or outside the scope, with the same words
  // whatever the reason, so a name never tells one tenant about another's. FAILED_PRECONDITION
  // for a name several tenants' VMs have, asked without a tenant (the operator).
  absl::StatusOr<ppn::fleet::v1::VmRecord> GetVm(const Scope& scope, const std::string& vm_id);
  // A page of the scope's VMs, oldest first. `r.filter` as ParseVmFilter takes it; a state term
  // naming the destroyed state lists destroyed VMs (include_stopped does too). INVALID_ARGUMENT
  // for a bad filter or page size, or a page token this scope and these fields were not given.
  absl::StatusOr<ppn::fleet::v1::ListVmsResponse> ListVms(const Scope& scope, const ppn::fleet::v1::ListVmsRequest& r);
  // Destroys a VM and records it DESTROYED (idempotent). A VM that does not run (PENDING,
  // FAILED, LOST, or UNKNOWN on an unreachable node) is DESTROYED at once; its node is told to
  // destroy it if it ever reports it. A running VM is destroyed on its node first: the node's
  // error (UNAVAILABLE: retry) if that fails.
  absl::StatusOr<ppn::fleet::v1::VmRecord> DestroyVm(const Scope& scope, const std::string& vm_id, const Actor& actor);
  // Replaces a running VM's egress policy on its node, then records it (spec.egress, durable)
  // and appends vm.network for `actor`. `egress` is taken as given (the tenant proxy narrowed
  // it to the tenant's default); only its form is checked (INVALID_ARGUMENT). NOT_FOUND as
  // GetVm; UNAVAILABLE if its node is unreachable (or did not answer: the node may have
  // applied it, so retry); FAILED_PRECONDITION unless the record is RUNNING (a VM starting,
  // migrating or stopped has no network to change now, and a migration copies the recorded
  // spec) or if its node cannot change it; ABORTED if another change of the same VM is in
  // flight or it moved meanwhile. The node's INVALID_ARGUMENT comes back as is.
  absl::StatusOr<ppn::fleet::v1::VmRecord> UpdateVmNetwork(const Scope& scope, const std::string& vm_id,
                                                           const ppn::types::v1::EgressPolicy& egress,
                                                           const Actor& actor);
  // Power, on the VM's node (ledger vm.stop, vm.start, vm.reboot for `actor`). NOT_FOUND as
  // GetVm; UNAVAILABLE while its node is unreachable (or did not answer).
  // StopVm: ACPI power-off, killed after `grace` (0: 30 s); the disk and identity stay on the
  // node: STOPPED (OK at once if it is already). FAILED_PRECONDITION unless RUNNING or STARTING.
  absl::StatusOr<ppn::fleet::v1::VmRecord> StopVm(const Scope& scope, const std::string& vm_id, absl::Duration grace,
                                                  const Actor& actor);
  // StartVm: boots a STOPPED VM on its node again, with its disk (STARTING; OK at once if it
  // runs). FAILED_PRECONDITION if it is not stopped; the node's RESOURCE_EXHAUSTED as is.
  // Its node gone, revoked or unreachable (the VM STOPPED or UNKNOWN): without `fresh_disk`,
  // FAILED_PRECONDITION (nothing is moved or lost; the words say what the caller can do).
  // With it, the VM is placed again as a create is (RESOURCE_EXHAUSTED with the same words if
  // nothing has room; FAILED_PRECONDITION if it is pinned) and spawned there from its image
  // with the same vm_id, spec (user_data is never stored: the fresh boot has none), name,
  // labels, private NICs and relay ports; the record moves (ledger vm.start with
  // fresh_disk=true, from_node, to_node) and the old node goes to left_behind_node_ids: it is
  // told to destroy its copy when it returns (Reconciler R0). `fresh_disk` is ignored while
  // the node is alive.
  absl::StatusOr<ppn::fleet::v1::VmRecord> StartVm(const Scope& scope, const std::string& vm_id, const Actor& actor,
                                                   bool fresh_disk = false);
  // RebootVm: ACPI power-off and boot, or a reset after `grace`; `*how` says which.
  // FAILED_PRECONDITION unless RUNNING or STARTING.
  absl::StatusOr<ppn::fleet::v1::VmRecord> RebootVm(const Scope& scope, const std::string& vm_id, absl::Duration grace,
                                                    const Actor& actor, std::string* how);
  // A bounded read of the VM's console log on its node. NOT_FOUND as GetVm (and for a
  // DESTROYED VM, whose log went with it); UNAVAILABLE while its node is unreachable.
  absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> GetConsoleOutput(const Scope& scope, const std::string& vm_id,
                                                                           uint64_t offset, uint32_t max_bytes);
  std::vector<ppn::fleet::v1::Node> ListNodes();
  Decision Explain(const ppn::types::v1::VmSpec& spec, const std::set<std::string>& excluded);
  // Moves the record to the target. OK if it is there already (the fleet may have adopted it
  // from the target's heartbeat first); ABORTED if it is on neither node; FAILED_PRECONDITION
  // if it was destroyed.
  absl::StatusOr<ppn::fleet::v1::VmRecord> RecordMigration(const ppn::fleet::v1::RecordMigrationRequest& r);
  absl::StatusOr<ppn::fleet::v1::VmRecord> SetPin(const std::string& vm_id, const std::string& node_id);
  // The relay's route table now (Registry::RelayTable), stamped. FAILED_PRECONDITION without
  // a relay.
  absl::StatusOr<ppn::fleet::v1::WatchRelayRoutesResponse> RelayRoutes();

  // Private networks, always of one tenant (the tenant proxy's caller; an operator scope sees
  // every network). CreateNetwork: INVALID_ARGUMENT for a bad name, ALREADY_EXISTS for a name
  // the tenant uses, RESOURCE_EXHAUSTED when the pool is full, PERMISSION_DENIED without a
  // tenant. Get and Delete: NOT_FOUND "network X not found" for one that is absent or another
  // tenant's alike. Delete: FAILED_PRECONDITION "network X has VMs attached: ..." while any VM
  // of it is not DESTROYED.
  absl::StatusOr<ppn::types::v1::Network> CreateNetwork(const Scope& scope, const std::string& name);
  absl::StatusOr<ppn::types::v1::Network> GetNetwork(const Scope& scope, const std::string& network_id);
  std::vector<ppn::types::v1::Network> ListNetworks(const Scope& scope);
  absl::Status DeleteNetwork(const Scope& scope, const std::string& network_id);

  // Blocks until the registry changes after `version` or `timeout` passes; returns the version.
  uint64_t WaitForChange(uint64_t version, absl::Duration timeout);
  uint64_t version();

 private:
  // Records `e` DESTROYED now, for `actor`; releases what it held.
  absl::Status StopLocked(VmEntry& e, const Actor& actor) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The node to call about `ref` (an id or name; its record's, registered and reachable) and the record;
  // NOT_FOUND as GetVm, UNAVAILABLE when the node is unreachable or unknown.
  absl::Status CallTargetLocked(const Scope& scope, const std::string& ref, std::string* node_id, std::string* address,
                                ppn::fleet::v1::VmRecord* record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records what the node answered a power call with, appends `kind` for `actor`.
  absl::StatusOr<ppn::fleet::v1::VmRecord> RecordPowerLocked(const std::string& vm_id, const std::string& node_id,
                                                             const ppn::host::v1::VmInstance& vm,
                                                             absl::string_view kind, const Actor& actor,
                                                             absl::string_view how) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // StartVm with fresh_disk once the VM's node is gone: placed and spawned elsewhere.
  // Called and returns with mu_ held; releases it for the spawn.
  absl::StatusOr<ppn::fleet::v1::VmRecord> StartElsewhere(const std::string& vm_id, const Actor& actor)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a create attempt that failed for good: its record goes.
  void AbandonLocked(const std::string& vm_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  PlacementRequest RequestFor(const ppn::types::v1::VmSpec& spec, const std::set<std::string>& excluded) const;
  void QueueLocked(std::vector<NodeAction> actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunNodeActions();
  // Private networks' tunnels: what each node's heartbeat said its ends are, and the peers
  // each (node, network) should have (the network's other nodes' ends, with the addresses of
  // the network's VMs there). A node whose applied peers differ gets SetNetworkPeers, so a
  // change (a create, a destroy, a move, a restarted node) is caught up within a heartbeat.
  void QueuePeersLocked(const std::string& node_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ppn::host::v1::SetNetworkPeersRequest PeersFor(const std::string& node_id, const std::string& network_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunPeerActions();
  std::string NewVmId();
  // The record `ref` (a vm_id or a name) names within `scope`; errors as GetVm says.
  absl::StatusOr<VmEntry*> ResolveLocked(const Scope& scope, const std::string& ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if one of `tenant_id`'s VMs that exist other than `except` is named `name`.
  bool NameTakenLocked(const std::string& tenant_id, const std::string& name, const std::string& except)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The VM's NICs on the networks `spec` names: each network the tenant's (NOT_FOUND as
  // GetNetwork otherwise), each address the lowest one no other VM of it holds.
  absl::StatusOr<google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>> AssignNicsLocked(
      const std::string& tenant_id, const std::string& vm_id, const ppn::types::v1::VmSpec& spec)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Deps deps_;
  const Options options_;
  LifecycleLog log_;
  PageTokens page_tokens_;
  absl::Mutex mu_;
  Registry registry_ ABSL_GUARDED_BY(mu_);
  NetworkPool networks_ ABSL_GUARDED_BY(mu_);
  // node → network → that node's end of the network's tunnel (from its last heartbeat).
  std::map<std::string, std::map<std::string, ppn::host::v1::NetworkTunnel>> tunnels_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ppn::host::v1::SetNetworkPeersRequest> peer_actions_ ABSL_GUARDED_BY(mu_);  // "node/network"
  Reconciler reconciler_ ABSL_GUARDED_BY(mu_);
  std::vector<NodeAction> actions_ ABSL_GUARDED_BY(mu_);    // queued by heartbeats, run by RunOnce
  std::set<std::string> action_keys_ ABSL_GUARDED_BY(mu_);  // queued or running
  // VMs whose network a call is changing now: one at a time, so the node and the record
  // agree on which change came last.
  std::set<std::string> network_changes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::fleet
