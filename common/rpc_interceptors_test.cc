// One request id from the first server to the next, and every RPC counted for Prometheus.

#include "common/rpc_interceptors.h"

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "common/grpc_server.h"
#include "common/metrics.h"
#include "common/request_id.h"
#include "grpcpp/client_context.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "tests/harness/test_pki.h"

namespace ppn {
namespace {

using ppn::ledger::v1::GetCheckpointRequest;
using ppn::ledger::v1::GetCheckpointResponse;
using ppn::ledger::v1::Ledger;

// Answers GetCheckpoint with the request id its handler sees (in origin), after asking `next`
// (when set) the same through a MeshChannel.
class Echo final : public Ledger::Service {
 public:
  explicit Echo(std::shared_ptr<grpc::Channel> next = nullptr) : next_(std::move(next)) {}
  grpc::Status GetCheckpoint(grpc::ServerContext*, const GetCheckpointRequest*, GetCheckpointResponse* out) override {
    std::string seen = CurrentRequestId();
    if (next_ != nullptr) {
      grpc::ClientContext ctx;
      GetCheckpointRequest req;
      GetCheckpointResponse resp;
      grpc::Status s = Ledger::NewStub(next_)->GetCheckpoint(&ctx, req, &resp);
      if (!s.ok()) return s;
      seen += "|" + resp.signed_note();
    }
    out->set_signed_note(seen);
    if (seen == "fail") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no");
    return grpc::Status::OK;
  }

 private:
  std::shared_ptr<grpc::Channel> next_;
};

TEST_CASE("a request id is kept or made, returned, seen by the handler and forwarded; every RPC is counted",
          "[common][rpc][metrics]") {
  ppn::testing::TestPki pki;
  TlsFiles tls = pki.Issue("ledger", "ledger");
  RolePolicy policy = RolePolicy(pki.mesh()).AllowService("ppn.ledger.v1.Ledger", {"ledger"});
  Echo last;
  StartedServer second = *StartMeshServer("127.0.0.1:0", tls, policy, {&last});
  Echo first(MeshChannel("127.0.0.1:" + std::to_string(second.port), MtlsChannelCredentials(tls)));
  StartedServer front = *StartMeshServer("127.0.0.1:0", tls, policy, {&first});
  auto stub = Ledger::NewStub(MeshChannel("127.0.0.1:" + std::to_string(front.port), MtlsChannelCredentials(tls)));

  auto call = [&](const std::string& sent, std::string* returned) {
    grpc::ClientContext ctx;
    if (!sent.empty()) ctx.AddMetadata(kRequestIdHeader, sent);
    GetCheckpointRequest req;
    GetCheckpointResponse resp;
    grpc::Status s = stub->GetCheckpoint(&ctx, req, &resp);
    REQUIRE(s.ok());
    auto it = ctx.GetServerInitialMetadata().find(kRequestIdHeader);
    *returned = it == ctx.GetServerInitialMetadata().end() ? "" : std::string(it->second.data(), it->second.size());
    return resp.signed_note();
  };
  std::string returned;
  CHECK(call("req-42", &returned) == "req-42|req-42");  // both handlers saw the caller's id
  CHECK(returned == "req-42");
  std::string made = call("", &returned);  // none sent: the first server makes one
  CHECK(returned.size() == 32);
  CHECK(made == returned + "|" + returned);
  call("bad id; with=spaces", &returned);  // not a plain id: replaced, never echoed
  CHECK(returned.size() == 32);
  CHECK(CurrentRequestId().empty());  // nothing leaks into the calling thread

  std::string text = metrics::Default().Render();
  INFO(text);
  CHECK(absl::StrContains(text,
                          "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"ppn.ledger.v1.Ledger\","
                          "grpc_method=\"GetCheckpoint\",grpc_code=\"OK\"} 6\n"));
  CHECK(absl::StrContains(text,
                          "grpc_server_handling_seconds_count{grpc_type=\"unary\",grpc_service=\"ppn.ledger.v1."
                          "Ledger\",grpc_method=\"GetCheckpoint\"} 6\n"));
  front.server->Shutdown();
  second.server->Shutdown();
}

}  // namespace
}  // namespace ppn
