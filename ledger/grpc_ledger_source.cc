#include "ledger/grpc_ledger_source.h"

#include <chrono>

#include "common/grpc_status.h"

namespace ppn::ledger {
namespace {

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
}

}  // namespace

GrpcLedgerSource::GrpcLedgerSource(std::shared_ptr<grpc::Channel> channel)
    : stub_(ppn::ledger::v1::Ledger::NewStub(std::move(channel))) {}

absl::StatusOr<ppn::ledger::v1::GetCheckpointResponse> GrpcLedgerSource::GetCheckpoint() {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ppn::ledger::v1::GetCheckpointResponse response;
  grpc::Status status = stub_->GetCheckpoint(&ctx, {}, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<ppn::ledger::v1::GetEntriesResponse> GrpcLedgerSource::GetEntries(uint64_t start_index, int page_size) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ppn::ledger::v1::GetEntriesRequest request;
  request.set_start_index(start_index);
  request.set_page_size(page_size);
  ppn::ledger::v1::GetEntriesResponse response;
  grpc::Status status = stub_->GetEntries(&ctx, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<std::vector<Hash>> GrpcLedgerSource::GetConsistencyProof(uint64_t first_tree_size,
                                                                        uint64_t second_tree_size) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ppn::ledger::v1::GetConsistencyProofRequest request;
  request.set_first_tree_size(first_tree_size);
  request.set_second_tree_size(second_tree_size);
  ppn::ledger::v1::GetConsistencyProofResponse response;
  grpc::Status status = stub_->GetConsistencyProof(&ctx, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return std::vector<Hash>(response.hashes().begin(), response.hashes().end());
}

}  // namespace ppn::ledger
