#pragma once

// The scheduler's peers: what it asks of the fleet, of one host agent and of the ledger. The
// scheduler decides nothing about placement itself: the fleet is the placement authority and
// answers as a PlacementOracle. Headers only; the gRPC implementations are in grpc_peers.h,
// fakes in scheduler/testing/. Every implementation must be thread-safe: one scheduler serves
// many RPCs at once.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/ids.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/host/v1/host_agent.pb.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::scheduler {

using ppn::types::v1::MigrationProgress;
using Ports = google::protobuf::RepeatedPtrField<ppn::types::v1::ForwardedPort>;

// Receives one progress report of a migration; returns false to cancel it.
using ProgressFn = std::function<bool(const MigrationProgress&)>;

// Where the fleet's placement policy (liveness, trust, KVM preference, reservations of
// creates in flight, free memory) would put a VM now.
class PlacementOracle {
 public:
  virtual ~PlacementOracle() = default;
  // The decision for `spec` with `excluded` left out; an empty chosen_node_id says no node
  // can take it, and the verdicts say why. An error means the question was not answered.
  virtual absl::StatusOr<ppn::fleet::v1::PlacementDecision> ExplainPlacement(const ppn::types::v1::VmSpec& spec,
                                                                             const std::vector<NodeId>& excluded) = 0;
};

// The fleet: the record of every node and VM.
class FleetPeer : public PlacementOracle {
 public:
  // NOT_FOUND if the fleet has no such VM.
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> GetVm(const VmId& vm) = 0;
  // Every VM that is not DESTROYED, on `node` only unless it is empty (all pages).
  virtual absl::StatusOr<std::vector<ppn::fleet::v1::VmRecord>> ListVms(const NodeId& node) = 0;
  virtual absl::StatusOr<std::vector<ppn::fleet::v1::Node>> ListNodes() = 0;
  // Records that `vm` moved from `source` to `target` with these ports there. ABORTED if the
  // fleet no longer has it on `source`.
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> RecordMigration(const VmId& vm, const NodeId& source,
                                                                   const NodeId& target, const Ports& ports) = 0;
  // Pins `vm` to `node` (the node it runs on), or unpins it when `node` is empty.
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> SetPin(const VmId& vm, const NodeId& node) = 0;
  // Cordons `node` (no new VMs, no incoming migrations) with `reason`; returns the node.
  // NOT_FOUND for an unknown node.
  virtual absl::StatusOr<ppn::fleet::v1::Node> CordonNode(const NodeId& node, const std::string& reason) = 0;
};

// What a target prepares for.
struct IncomingVm {
  VmId vm;
  TenantId tenant;
  ppn::types::v1::VmSpec spec;
  ppn::types::v1::Accelerator accelerator = ppn::types::v1::ACCELERATOR_UNSPECIFIED;
  // The target removes itself if no migration stream starts within this time.
  absl::Duration ready_timeout = absl::Seconds(60);
  // The node the stream will come from: only its certificate may send it.
  NodeId source;
  // Its NICs on private networks: the target attaches the same addresses and MACs.
  google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic> private_nics;
};

// What a source sends, and where.
struct OutgoingMigration {
  VmId vm;
  NodeId target;
  std::string migration_uri;  // from the target's PrepareIncoming
  std::string disk_nbd_uri;   // from the target's PrepareIncoming
  uint64_t max_bandwidth_mib_per_second = 0;
  std::string migration_ticket;  // SECRET: from the target's PrepareIncoming; never logged
};

// One host agent.
class AgentPeer {
 public:
  virtual ~AgentPeer() = default;
  virtual absl::StatusOr<ppn::host::v1::PrepareIncomingResponse> PrepareIncoming(const IncomingVm& vm) = 0;
  // Runs the outgoing migration, calling `progress` for each report before the last (false
  // cancels the stream). Returns the last report (COMPLETED or FAILED) when the source ended
  // the stream itself; an error when the source refused or the stream broke.
  virtual absl::StatusOr<MigrationProgress> MigrateOut(const OutgoingMigration& migration,
                                                       const ProgressFn& progress) = 0;
  virtual absl::StatusOr<std::vector<ppn::host::v1::VmInstance>> ListVms() = 0;
  // NOT_FOUND if the node does not have the VM.
  virtual absl::Status DestroyVm(const VmId& vm) = 0;
  // Continues a paused copy. FAILED_PRECONDITION if it is not paused.
  virtual absl::StatusOr<ppn::host::v1::VmInstance> ResumeVm(const VmId& vm) = 0;
};

// Makes (and keeps) the client of each node. The returned peer lives as long as the factory.
class AgentPeers {
 public:
  virtual ~AgentPeers() = default;
  virtual AgentPeer* ForNode(const NodeId& node, const std::string& address) = 0;
};

// The ledger, through a durable outbox (common/ledger_outbox.h).
class LedgerPeer {
 public:
  virtual ~LedgerPeer() = default;
  // Queues `entry` durably; it reaches the ledger later, in order, exactly once. An error
  // means it could not be queued.
  virtual absl::Status Append(const ppn::ledger::v1::AppendRequest& entry) = 0;
};

}  // namespace ppn::scheduler
