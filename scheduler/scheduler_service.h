#pragma once

// The scheduler service: live migration, drain, rebalance and pins. Stateless: everything it
// decides comes from the fleet (registry, nodes, placement) and the nodes themselves; the
// outcome is recorded in the fleet and the ledger. Thread-safe.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tls_credentials.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "ppn/scheduler/v1/scheduler_service.grpc.pb.h"

namespace ppn::scheduler {

using ProgressFn = std::function<bool(const ppn::types::v1::MigrationProgress&)>;

class SchedulerServiceImpl final : public ppn::scheduler::v1::Scheduler::Service {
 public:
  // Talks to the fleet and ledger at these addresses and to host agents at the addresses the
  // fleet reports, all with `tls` (role scheduler).
  SchedulerServiceImpl(const std::string& fleet_address, const std::string& ledger_address, TlsFiles tls);

  grpc::Status Migrate(grpc::ServerContext*, const v1::MigrateRequest*,
                       grpc::ServerWriter<v1::MigrateResponse>*) override;
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest*, grpc::ServerWriter<v1::DrainResponse>*) override;
  grpc::Status Rebalance(grpc::ServerContext*, const v1::RebalanceRequest*,
                         grpc::ServerWriter<v1::RebalanceResponse>*) override;
  grpc::Status Pin(grpc::ServerContext*, const v1::PinRequest*, v1::PinResponse*) override;
  grpc::Status Unpin(grpc::ServerContext*, const v1::UnpinRequest*, v1::UnpinResponse*) override;

  // One migration, reporting to `progress`. The final report is COMPLETED or FAILED; an
  // error status means it never started (NOT_FOUND, FAILED_PRECONDITION for a pinned or
  // not running VM, RESOURCE_EXHAUSTED without a target, UNAVAILABLE).
  absl::StatusOr<ppn::types::v1::MigrationProgress> MigrateVm(const v1::MigrateRequest& request,
                                                              const ProgressFn& progress);

 private:
  // Appends `vm.migrate` to the ledger for a move that was attempted (the target was asked to
  // prepare): on success with its times and bytes, on failure with the reason.
  void RecordMigrationAttempt(const ppn::fleet::v1::VmRecord& vm, const ppn::types::v1::MigrationProgress& report,
                              bool succeeded);
  absl::StatusOr<std::vector<ppn::fleet::v1::Node>> Nodes();
  std::unique_ptr<ppn::host::v1::HostAgent::Stub> Agent(const std::string& address);
  absl::StatusOr<std::vector<v1::PlannedMove>> RebalancePlan();

  const TlsFiles tls_;
  std::unique_ptr<ppn::fleet::v1::FleetService::Stub> fleet_;
  std::unique_ptr<ppn::ledger::v1::Ledger::Stub> ledger_;
};

}  // namespace ppn::scheduler
