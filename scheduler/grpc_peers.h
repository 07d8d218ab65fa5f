#pragma once

// The scheduler's peers over mTLS gRPC, presenting the scheduler's certificate, and the
// ledger peer over a LedgerOutbox. Each call has its own deadline; gRPC errors come back as
// absl::Status (common/grpc_status.h). Thread-safe.

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/ledger_outbox.h"
#include "common/tls_credentials.h"
#include "grpcpp/channel.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "scheduler/peers.h"

namespace ppn::scheduler {

class GrpcFleetPeer final : public FleetPeer {
 public:
  GrpcFleetPeer(const std::string& address, const TlsFiles& tls);

  absl::StatusOr<ppn::fleet::v1::PlacementDecision> ExplainPlacement(const ppn::types::v1::VmSpec& spec,
                                                                     const std::vector<NodeId>& excluded) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> GetVm(const VmId& vm) override;
  absl::StatusOr<std::vector<ppn::fleet::v1::VmRecord>> ListVms(const NodeId& node) override;
  absl::StatusOr<std::vector<ppn::fleet::v1::Node>> ListNodes() override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> RecordMigration(const VmId& vm, const NodeId& source, const NodeId& target,
                                                           const Ports& ports) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> SetPin(const VmId& vm, const NodeId& node) override;
  absl::StatusOr<ppn::fleet::v1::Node> CordonNode(const NodeId& node, const std::string& reason) override;

 private:
  std::unique_ptr<ppn::fleet::v1::FleetService::Stub> stub_;
};

class GrpcAgentPeers final : public AgentPeers {
 public:
  explicit GrpcAgentPeers(TlsFiles tls) : tls_(std::move(tls)) {}
  AgentPeer* ForNode(const NodeId& node, const std::string& address) override;

 private:
  const TlsFiles tls_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<AgentPeer>> peers_ ABSL_GUARDED_BY(mu_);  // by "node@address"
};

// Appends through `*outbox`, which must outlive this object.
class OutboxLedgerPeer final : public LedgerPeer {
 public:
  explicit OutboxLedgerPeer(LedgerOutbox* outbox) : outbox_(outbox) {}
  absl::Status Append(const ppn::ledger::v1::AppendRequest& entry) override { return outbox_->Enqueue(entry); }

 private:
  LedgerOutbox* const outbox_;
};

}  // namespace ppn::scheduler
