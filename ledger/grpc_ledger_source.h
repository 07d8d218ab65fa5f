#pragma once

// GrpcLedgerSource: the LedgerMirror's LedgerSource over the ledger's gRPC API (read calls,
// 10 s deadline each). Thread-safe; the channel is shared.

#include <memory>

#include "grpcpp/channel.h"
#include "ledger/mirror.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"

namespace ppn::ledger {

class GrpcLedgerSource final : public LedgerSource {
 public:
  explicit GrpcLedgerSource(std::shared_ptr<grpc::Channel> channel);
  absl::StatusOr<ppn::ledger::v1::GetCheckpointResponse> GetCheckpoint() override;
  absl::StatusOr<ppn::ledger::v1::GetEntriesResponse> GetEntries(uint64_t start_index, int page_size) override;
  absl::StatusOr<std::vector<Hash>> GetConsistencyProof(uint64_t first_tree_size, uint64_t second_tree_size) override;

 private:
  std::unique_ptr<ppn::ledger::v1::Ledger::Stub> stub_;
};

}  // namespace ppn::ledger
