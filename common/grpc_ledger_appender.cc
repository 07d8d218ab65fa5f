#include "common/grpc_ledger_appender.h"

#include <memory>

#include "common/grpc_status.h"
#include "common/rpc_interceptors.h"
#include "grpcpp/create_channel.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"

namespace ppn {

LedgerAppendFn GrpcLedgerAppender(const std::string& address, const TlsFiles& tls) {
  std::shared_ptr<ppn::ledger::v1::Ledger::Stub> stub =
      ppn::ledger::v1::Ledger::NewStub(ppn::MeshChannel(address, MtlsChannelCredentials(tls)));
  return [stub](const ppn::ledger::v1::AppendRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ppn::ledger::v1::AppendResponse resp;
    return FromGrpcStatus(stub->Append(&ctx, req, &resp));
  };
}

}  // namespace ppn
