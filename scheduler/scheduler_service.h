#pragma once

// The scheduler's gRPC adapter: proto in, typed SchedulerCore call, proto and status out;
// a failed call is logged once (common/rpc_log.h). No decisions here. Thread-safe; `*core`
// must outlive it.

#include "ppn/scheduler/v1/scheduler_service.grpc.pb.h"
#include "scheduler/scheduler_core.h"

namespace ppn::scheduler {

class SchedulerService final : public v1::Scheduler::Service {
 public:
  explicit SchedulerService(SchedulerCore* core) : core_(core) {}

  grpc::Status Migrate(grpc::ServerContext*, const v1::MigrateRequest*,
                       grpc::ServerWriter<v1::MigrateResponse>*) override;
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest*, grpc::ServerWriter<v1::DrainResponse>*) override;
  grpc::Status Rebalance(grpc::ServerContext*, const v1::RebalanceRequest*,
                         grpc::ServerWriter<v1::RebalanceResponse>*) override;
  grpc::Status Pin(grpc::ServerContext*, const v1::PinRequest*, v1::PinResponse*) override;
  grpc::Status Unpin(grpc::ServerContext*, const v1::UnpinRequest*, v1::UnpinResponse*) override;

 private:
  SchedulerCore* const core_;
};

}  // namespace ppn::scheduler
