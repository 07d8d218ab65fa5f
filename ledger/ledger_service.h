#pragma once

// gRPC adapter of the ledger: peer identity and protos in, MerkleLog calls, statuses out.

#include "ledger/merkle_log.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"

namespace ppn::ledger {

// Thread-safe. `*log` must outlive the service.
class LedgerService final : public ppn::ledger::v1::Ledger::Service {
 public:
  explicit LedgerService(MerkleLog* log) : log_(log) {}

  grpc::Status Append(grpc::ServerContext* context, const v1::AppendRequest* request,
                      v1::AppendResponse* response) override;
  grpc::Status AppendBatch(grpc::ServerContext* context, const v1::AppendBatchRequest* request,
                           v1::AppendBatchResponse* response) override;
  grpc::Status GetEntries(grpc::ServerContext* context, const v1::GetEntriesRequest* request,
                          v1::GetEntriesResponse* response) override;
  grpc::Status GetCheckpoint(grpc::ServerContext* context, const v1::GetCheckpointRequest* request,
                             v1::GetCheckpointResponse* response) override;
  grpc::Status GetInclusionProof(grpc::ServerContext* context, const v1::GetInclusionProofRequest* request,
                                 v1::GetInclusionProofResponse* response) override;
  grpc::Status GetConsistencyProof(grpc::ServerContext* context, const v1::GetConsistencyProofRequest* request,
                                   v1::GetConsistencyProofResponse* response) override;
  grpc::Status WatchEntries(grpc::ServerContext* context, const v1::WatchEntriesRequest* request,
                            grpc::ServerWriter<v1::WatchEntriesResponse>* writer) override;

 private:
  MerkleLog* const log_;
};

}  // namespace ppn::ledger
