#include "tools/ppnctl/grpc_ledger_reader.h"

#include "common/grpc_status.h"
#include "grpcpp/create_channel.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"

namespace ppn::ppnctl {
namespace {

namespace v1 = ppn::ledger::v1;

class GrpcLedgerReader final : public LedgerReader {
 public:
  explicit GrpcLedgerReader(const Connection& c)
      : stub_(v1::Ledger::NewStub(grpc::CreateChannel(c.endpoint, c.credentials))) {}

  absl::StatusOr<v1::GetCheckpointResponse> GetCheckpoint() override {
    return Call<v1::GetCheckpointResponse>(&v1::Ledger::Stub::GetCheckpoint, v1::GetCheckpointRequest());
  }
  absl::StatusOr<v1::GetEntriesResponse> GetEntries(const v1::GetEntriesRequest& request) override {
    return Call<v1::GetEntriesResponse>(&v1::Ledger::Stub::GetEntries, request);
  }
  absl::StatusOr<v1::GetConsistencyProofResponse> GetConsistencyProof(
      const v1::GetConsistencyProofRequest& request) override {
    return Call<v1::GetConsistencyProofResponse>(&v1::Ledger::Stub::GetConsistencyProof, request);
  }

 private:
  template <typename Response, typename Request>
  absl::StatusOr<Response> Call(grpc::Status (v1::Ledger::Stub::*method)(grpc::ClientContext*, const Request&,
                                                                         Response*),
                                const Request& request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    Response response;
    grpc::Status s = (stub_.get()->*method)(&ctx, request, &response);
    if (!s.ok()) return FromGrpcStatus(s);
    return response;
  }

  std::unique_ptr<v1::Ledger::Stub> stub_;
};

}  // namespace

std::unique_ptr<LedgerReader> NewGrpcLedgerReader(const Connection& connection) {
  return std::make_unique<GrpcLedgerReader>(connection);
}

}  // namespace ppn::ppnctl
