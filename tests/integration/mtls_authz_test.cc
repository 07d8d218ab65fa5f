// The shared server plumbing over real sockets: mTLS, the per-method role allow-list that
// runs before any handler, health and reflection.

#include <atomic>
#include <memory>
#include <string>

#include "catch2/catch.hpp"
#include "common/grpc_server.h"
#include "common/peer_identity.h"
#include "common/role_auth_processor.h"
#include "common/tls_credentials.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "ppn/testing/v1/echo.grpc.pb.h"
#include "tests/harness/test_pki.h"

namespace ppn {
namespace {

using ppn::testing::v1::Echo;
using ppn::testing::v1::PingRequest;
using ppn::testing::v1::PingResponse;

class EchoService final : public Echo::Service {
 public:
  grpc::Status Ping(grpc::ServerContext* context, const PingRequest* request, PingResponse* response) override {
    return Answer(context, request, response);
  }
  grpc::Status Admin(grpc::ServerContext* context, const PingRequest* request, PingResponse* response) override {
    return Answer(context, request, response);
  }
  std::atomic<int> calls{0};

 private:
  grpc::Status Answer(grpc::ServerContext* context, const PingRequest* request, PingResponse* response) {
    ++calls;
    absl::StatusOr<SpiffeId> peer = PeerSpiffeId(*context);
    response->set_text(request->text());
    response->set_peer(peer.ok() ? peer->ToString() : "");
    return grpc::Status::OK;
  }
};

struct Fixture {
  ppn::testing::TestPki pki{"ppn.test"};
  EchoService service;
  StartedServer server;

  Fixture() {
    RolePolicy policy(pki.mesh());
    policy.Allow("/ppn.testing.v1.Echo/Ping", {"fleet", "scheduler"});
    policy.Allow("/ppn.testing.v1.Echo/Admin", {"operator"});
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.credentials = MtlsServerCredentials(pki.Issue("ledger", "ledger-1"));
    options.auth_processor = std::make_shared<RoleAuthProcessor>(std::move(policy));
    options.services = {&service};
    absl::StatusOr<StartedServer> started = StartServer(options);
    REQUIRE(started.ok());
    server = std::move(*started);
  }
  ~Fixture() { server.server->Shutdown(); }

  std::string Target() const { return "127.0.0.1:" + std::to_string(server.port); }

  std::shared_ptr<grpc::Channel> Channel(std::shared_ptr<grpc::ChannelCredentials> creds) {
    return grpc::CreateChannel(Target(), creds);
  }

  grpc::Status Call(std::shared_ptr<grpc::ChannelCredentials> creds, bool admin, PingResponse* response) {
    auto stub = Echo::NewStub(Channel(creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    PingRequest request;
    request.set_text("hello");
    return admin ? stub->Admin(&ctx, request, response) : stub->Ping(&ctx, request, response);
  }
};

TEST_CASE("an allowed role reaches the handler and the handler sees its SPIFFE id", "[common][authz]") {
  Fixture f;
  PingResponse response;
  grpc::Status status = f.Call(MtlsChannelCredentials(f.pki.Issue("fleet", "fleet-1")), false, &response);
  REQUIRE(status.ok());
  CHECK(response.text() == "hello");
  CHECK(response.peer() == "spiffe://ppn.test/fleet/fleet-1");
  CHECK(f.service.calls == 1);
}

TEST_CASE("a role not on a method's allow-list is denied before the handler runs", "[common][authz]") {
  Fixture f;
  PingResponse response;
  auto fleet = MtlsChannelCredentials(f.pki.Issue("fleet", "fleet-1"));
  grpc::Status status = f.Call(fleet, true, &response);
  CHECK(status.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(status.error_message() == "role fleet may not call /ppn.testing.v1.Echo/Admin");
  status = f.Call(MtlsChannelCredentials(f.pki.Issue("tenant-proxy", "proxy-1")), false, &response);
  CHECK(status.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(f.service.calls == 0);

  SECTION("while the allowed role on the same method passes") {
    status = f.Call(MtlsChannelCredentials(f.pki.Issue("operator", "alice")), true, &response);
    CHECK(status.ok());
    CHECK(f.service.calls == 1);
  }
}

TEST_CASE("a client without a certificate cannot call", "[common][authz]") {
  Fixture f;
  PingResponse response;
  grpc::Status status = f.Call(TlsChannelCredentials(f.pki.ca_cert_path()), false, &response);
  CHECK_FALSE(status.ok());
  CHECK(status.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(f.service.calls == 0);
}

TEST_CASE("a certificate from another CA is refused in the handshake", "[common][authz]") {
  Fixture f;
  ppn::testing::TestPki rogue("ppn.test");  // same mesh name, different CA key
  TlsFiles files = rogue.Issue("fleet", "fleet-1");
  files.ca_cert = f.pki.ca_cert_path();  // the rogue client does trust the real server
  PingResponse response;
  grpc::Status status = f.Call(MtlsChannelCredentials(files), false, &response);
  CHECK(status.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(f.service.calls == 0);
}

TEST_CASE("a certificate of another mesh or without one SPIFFE id is refused", "[common][authz]") {
  Fixture f;
  PingResponse response;
  SECTION("another trust domain signed by the same CA") {
    auto creds = MtlsChannelCredentials(f.pki.IssueWithUris("foreign", {"spiffe://other.mesh/fleet/fleet-1"}));
    grpc::Status status = f.Call(creds, false, &response);
    CHECK(status.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK(status.error_message().find("not a member of mesh ppn.test") != std::string::npos);
  }
  SECTION("no URI SAN") {
    grpc::Status status = f.Call(MtlsChannelCredentials(f.pki.IssueWithUris("plain", {})), false, &response);
    CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  SECTION("two SPIFFE ids") {
    auto creds = MtlsChannelCredentials(
        f.pki.IssueWithUris("two", {"spiffe://ppn.test/fleet/a", "spiffe://ppn.test/operator/b"}));
    grpc::Status status = f.Call(creds, true, &response);
    CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  CHECK(f.service.calls == 0);
}

TEST_CASE("health and reflection answer any mesh member", "[common][health]") {
  Fixture f;
  auto channel = f.Channel(MtlsChannelCredentials(f.pki.Issue("tenant-proxy", "proxy-1")));

  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health->Check(&ctx, request, &response);
  REQUIRE(status.ok());
  CHECK(response.status() == grpc::health::v1::HealthCheckResponse::SERVING);

  // Reflection's request, hand-encoded: field 7 (list_services) = "*". The reply must name
  // the Echo service.
  grpc::GenericStub generic(channel);
  grpc::ClientContext rctx;
  rctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = generic.PrepareCall(&rctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  REQUIRE(cq.Next(&tag, &ok));
  REQUIRE(ok);
  const std::string list_services("\x3a\x01*", 3);
  grpc::Slice slice(list_services);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  REQUIRE(cq.Next(&tag, &ok));
  REQUIRE(ok);
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  REQUIRE(cq.Next(&tag, &ok));
  REQUIRE(ok);
  std::vector<grpc::Slice> slices;
  REQUIRE(in.Dump(&slices).ok());
  std::string reply;
  for (const auto& s : slices) reply.append(reinterpret_cast<const char*>(s.begin()), s.size());
  CHECK(reply.find("ppn.testing.v1.Echo") != std::string::npos);
  rctx.TryCancel();
  grpc::Status finish;
  call->Finish(&finish, reinterpret_cast<void*>(4));
  REQUIRE(cq.Next(&tag, &ok));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace ppn
