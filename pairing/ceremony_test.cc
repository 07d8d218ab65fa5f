// The Genesis ceremony over real sockets: success, wrong codes, typos, expiry, a relay in
// the middle, and no private key on the wire.

#include <atomic>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "catch2/catch.hpp"
#include "common/random.h"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "mesh/peer_table.h"
#include "pairing/pairing_services.h"
#include "pairing/short_code.h"
#include "pairing/wireguard.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn::pairing {
namespace {

using namespace ppn::pairing::v1;  // NOLINT

struct Joiner {
  ppn::testing::TempDir dir;
  ppn::testing::FakeClock clock;
  std::string code = *NewShortCode(*OpenSslRandom::Get());
  std::string node_key = *x509::GenerateKey();
  WireGuardKeys wg = *NewWireGuardKeys();
  x509::Identity tls = *EphemeralTlsIdentity("laptop-c");
  std::unique_ptr<JoinerCore> core;
  std::unique_ptr<JoinerService> service;
  StartedServer server;

  explicit Joiner(absl::Duration window = absl::Seconds(600), const std::string& name = "laptop-c",
                  const std::string& endpoint = "192.0.2.3:51820", const std::string& agent_address = "10.8.0.2:7112") {
    EnrollmentRequest req;
    req.set_node_name(name);
    req.set_wireguard_public_key(wg.public_key);
    req.set_wireguard_endpoint(endpoint);
    x509::CertRequest csr;
    csr.common_name = name;
    req.set_csr_pem(*x509::MakeCsr(node_key, csr));
    req.set_agent_address(agent_address);
    JoinerCore::Options o;
    o.code = *ParseShortCode(code);
    o.tls_fingerprint = *x509::Fingerprint(tls.cert_pem);
    o.window = window;
    core = std::make_unique<JoinerCore>(o, req, node_key, &clock, OpenSslRandom::Get());
    service = std::make_unique<JoinerService>(core.get());
    server = *StartJoinerServer("127.0.0.1:0", tls, dir.path(), service.get());
  }
  ~Joiner() { server.server->Shutdown(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(server.port); }
};

struct Admin {
  ppn::testing::TempDir dir;
  std::vector<ppn::ledger::v1::AppendRequest> ledger;
  std::map<std::string, uint64_t> idempotency_keys;  // as the ledger keeps them
  std::unique_ptr<AdminCore> core;
  explicit Admin(const std::string& node_name = "admin") {
    AdminCore::Options o;
    o.mesh = "ppn.test";
    o.ca = *x509::MakeCa("ppn.test", absl::Hours(1));
    o.admin_peer.set_node_name(node_name);
    o.admin_peer.set_public_key(NewWireGuardKeys()->public_key);
    o.admin_peer.set_mesh_address("10.8.0.1");
    o.admin_peer.add_allowed_ips("10.8.0.1/32");
    o.admin_peer.set_endpoint("203.0.113.7:51820");
    o.agent_address = "10.8.0.1:7112";
    o.wireguard_peers_file = dir.File("wg-peers.conf");
    core = *AdminCore::Create(
        o, dir.File("peers.db"),
        [this](const ppn::ledger::v1::AppendRequest& r) -> absl::StatusOr<uint64_t> {
          if (!r.idempotency_key().empty()) {
            auto seen = idempotency_keys.find(r.idempotency_key());
            if (seen != idempotency_keys.end()) return seen->second;
            idempotency_keys[r.idempotency_key()] = ledger.size();
          }
          ledger.push_back(r);
          return ledger.size() - 1;
        },
        OpenSslRandom::Get());
  }
};

// A different code that is still well formed (its check symbol matches).
std::string OtherCode(const std::string& code) {
  while (true) {
    std::string c = *NewShortCode(*OpenSslRandom::Get());
    if (c != code) return c;
  }
}

TEST_CASE("a whole ceremony enrolls the node with a certificate, peers and a ledger entry", "[pairing][ceremony]") {
  Joiner joiner;
  Admin admin;
  absl::StatusOr<ApproveNodeResponse> r = admin.core->Approve(joiner.address(), absl::AsciiStrToLower(joiner.code));
  INFO(r.status().message());
  REQUIRE(r.ok());
  CHECK(r->node_name() == "laptop-c");
  CHECK(r->mesh_address() == "10.8.0.2");
  CHECK(r->spiffe_id() == "spiffe://ppn.test/host/laptop-c");

  auto grant = joiner.core->WaitForOutcome(absl::Seconds(5));
  REQUIRE(grant.ok());
  CHECK(*x509::VerifyAndGetUris(grant->mesh_ca_pem(), grant->node_certificate_pem()) ==
        std::vector<std::string>{"spiffe://ppn.test/host/laptop-c"});
  CHECK(grant->admin_peer().public_key() == admin.core->Peers()[0].public_key());
  auto peers = admin.core->Peers();
  REQUIRE(peers.size() == 2);
  CHECK(peers[1].public_key() == joiner.wg.public_key);
  CHECK(peers[1].mesh_address() == grant->mesh_address());
  std::string wg =
      WgQuickConfig(joiner.wg, grant->mesh_address(), grant->mesh_prefix_length(), {grant->admin_peer()}, 51820);
  CHECK(wg.find("PublicKey = " + admin.core->Peers()[0].public_key()) != std::string::npos);

  std::ifstream peers_file(admin.dir.File("wg-peers.conf"));
  std::string peers_text((std::istreambuf_iterator<char>(peers_file)), std::istreambuf_iterator<char>());
  CHECK(peers_text.find("PublicKey = " + joiner.wg.public_key) != std::string::npos);
  CHECK(peers_text.find("AllowedIPs = 10.8.0.2/32") != std::string::npos);

  REQUIRE(admin.ledger.size() == 1);
  CHECK(admin.ledger[0].kind() == "node.join");
  CHECK(admin.ledger[0].subject() == "laptop-c");
  CHECK(admin.ledger[0].attributes().at("agent_address") == "10.8.0.2:7112");
  CHECK(admin.ledger[0].attributes().at("mesh_address") == "10.8.0.2");
  CHECK(admin.ledger[0].attributes().at("wireguard_public_key") == joiner.wg.public_key);
  CHECK(admin.ledger[0].attributes().at("wireguard_endpoint") == "192.0.2.3:51820");

  SECTION("no private key crosses the wire") {
    std::string wire;
    for (const auto& m : joiner.core->TranscriptForTest()) wire += m;
    CHECK(wire.find(joiner.wg.private_key) == std::string::npos);
    std::string raw;
    absl::Base64Unescape(joiner.wg.private_key, &raw);
    CHECK(wire.find(raw) == std::string::npos);
    CHECK(wire.find(joiner.node_key) == std::string::npos);
    std::string body = joiner.node_key.substr(joiner.node_key.find('\n') + 1, 40);
    CHECK(wire.find(body) == std::string::npos);
    CHECK(wire.find(joiner.tls.key_pem.substr(30, 40)) == std::string::npos);
  }
  SECTION("the code is dead afterwards") {
    CHECK(admin.core->Approve(joiner.address(), joiner.code).status().code() == absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("wrong codes spend attempts and the third ends the ceremony", "[pairing][ceremony]") {
  Joiner joiner;
  Admin admin;
  SECTION("a typo is caught locally without spending an attempt") {
    std::string typo = joiner.code;
    typo[0] = typo[0] == 'A' ? 'B' : 'A';
    auto r = admin.core->Approve(joiner.address(), typo);
    if (!ParseShortCode(typo).ok()) {
      CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK(joiner.core->failed_attempts() == 0);
    }
    auto bad_check =
        admin.core->Approve(joiner.address(), joiner.code.substr(0, 10) + (joiner.code[10] == '0' ? "1" : "0"));
    CHECK(bad_check.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(joiner.core->failed_attempts() == 0);
  }
  for (int i = 1; i <= 3; ++i) {
    auto r = admin.core->Approve(joiner.address(), OtherCode(joiner.code));
    CHECK(r.status().code() == absl::StatusCode::kPermissionDenied);
    CHECK(joiner.core->failed_attempts() == i);
  }
  CHECK(admin.ledger.empty());
  CHECK(admin.core->Peers().size() == 1);
  // Even the right code is too late now.
  auto late = admin.core->Approve(joiner.address(), joiner.code);
  CHECK(late.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(std::string(late.status().message()).find("ceremony has ended") != std::string::npos);
  CHECK(joiner.core->WaitForOutcome(absl::Seconds(1)).status().code() == absl::StatusCode::kPermissionDenied);
}

TEST_CASE("the ceremony expires after its window", "[pairing][ceremony]") {
  Joiner joiner;
  Admin admin;
  joiner.clock.Advance(absl::Seconds(601));
  auto r = admin.core->Approve(joiner.address(), joiner.code);
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(joiner.core->WaitForOutcome(absl::Seconds(1)).status().code() == absl::StatusCode::kDeadlineExceeded);
}

// A relay that terminates TLS with its own certificate and forwards the CPace messages.
class Relay final : public PairingJoiner::Service {
 public:
  explicit Relay(const std::string& target) {
    grpc::experimental::TlsChannelCredentialsOptions o;
    o.set_verify_server_certs(false);
    o.set_check_call_host(false);
    o.set_certificate_verifier(std::make_shared<grpc::experimental::NoOpCertificateVerifier>());
    stub_ = PairingJoiner::NewStub(grpc::CreateChannel(target, grpc::experimental::TlsCredentials(o)));
  }
  grpc::Status Exchange(grpc::ServerContext*, const ExchangeRequest* r, ExchangeResponse* out) override {
    grpc::ClientContext c;
    return stub_->Exchange(&c, *r, out);
  }
  grpc::Status Confirm(grpc::ServerContext*, const ConfirmRequest* r, ConfirmResponse* out) override {
    grpc::ClientContext c;
    return stub_->Confirm(&c, *r, out);
  }
  grpc::Status Complete(grpc::ServerContext*, const CompleteRequest* r, CompleteResponse* out) override {
    grpc::ClientContext c;
    return stub_->Complete(&c, *r, out);
  }

 private:
  std::unique_ptr<PairingJoiner::Stub> stub_;
};

TEST_CASE("a relay with its own TLS certificate cannot confirm the key", "[pairing][ceremony][mitm]") {
  Joiner joiner;
  Admin admin;
  ppn::testing::TempDir relay_dir;
  Relay relay(joiner.address());
  x509::Identity relay_tls = *EphemeralTlsIdentity("laptop-c");
  ServerOptions options;
  StartedServer relay_server;
  {
    // Serve the relay exactly as a joiner would be served, on its own certificate.
    TlsFiles files{relay_dir.File("t.pem"), relay_dir.File("t.pem"), relay_dir.File("t.key")};
    std::ofstream(files.cert) << relay_tls.cert_pem;
    std::ofstream(files.key) << relay_tls.key_pem;
    options.listen_address = "127.0.0.1:0";
    options.credentials = TlsServerCredentials(files);
    class Open final : public grpc::AuthMetadataProcessor {
     public:
      bool IsBlocking() const override { return false; }
      grpc::Status Process(const InputMetadata&, grpc::AuthContext*, OutputMetadata*, OutputMetadata*) override {
        return grpc::Status::OK;
      }
    };
    options.auth_processor = std::make_shared<Open>();
    options.services = {&relay};
    relay_server = *StartServer(options);
  }
  auto r = admin.core->Approve("127.0.0.1:" + std::to_string(relay_server.port), joiner.code);
  CHECK(r.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(joiner.core->failed_attempts() == 1);  // the joiner saw a confirmation it could not accept
  CHECK(admin.ledger.empty());
  relay_server.server->Shutdown();
}

ppn::ledger::v1::Entry AsEntry(const ppn::ledger::v1::AppendRequest& r, uint64_t index) {
  ppn::ledger::v1::Entry e;
  e.set_index(index);
  e.set_kind(r.kind());
  e.set_subject(r.subject());
  e.set_outcome(r.outcome());
  *e.mutable_attributes() = r.attributes();
  return e;
}

TEST_CASE("the founding node appends its own node.join once, and every node learns it from the ledger",
          "[pairing][founding]") {
  Admin admin("cloud");
  absl::StatusOr<uint64_t> first = admin.core->AppendFoundingJoin();
  REQUIRE(first.ok());
  CHECK(*admin.core->AppendFoundingJoin() == *first);  // every start repeats it: one entry
  REQUIRE(admin.ledger.size() == 1);
  const ppn::ledger::v1::AppendRequest& join = admin.ledger[0];
  const std::string cloud_key = admin.core->Peers()[0].public_key();
  CHECK(join.kind() == "node.join");
  CHECK(join.subject() == "cloud");
  CHECK(join.outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  CHECK(join.idempotency_key() == "founding-join/cloud/" + cloud_key);
  CHECK(join.attributes().at("mesh_address") == "10.8.0.1");
  CHECK(join.attributes().at("wireguard_public_key") == cloud_key);
  CHECK(join.attributes().at("wireguard_endpoint") == "203.0.113.7:51820");
  CHECK(join.attributes().at("agent_address") == "10.8.0.1:7112");
  CHECK(join.attributes().at("spiffe_id") == "spiffe://ppn.test/host/cloud");

  // A ceremony after it: the joiner's and the founding node's peer tables, from the ledger
  // alone, have each other.
  Joiner joiner;
  REQUIRE(admin.core->Approve(joiner.address(), joiner.code).ok());
  REQUIRE(admin.ledger.size() == 2);
  mesh::PeerTableOptions for_joiner, for_cloud;
  for_joiner.self = "laptop-c";
  for_joiner.granted_keys = {{"cloud", cloud_key}, {"laptop-c", joiner.wg.public_key}};
  for_cloud.self = "cloud";
  mesh::PeerTable joiner_table = *mesh::PeerTable::Create(for_joiner),
                  cloud_table = *mesh::PeerTable::Create(for_cloud);
  for (uint64_t i = 0; i < admin.ledger.size(); ++i) {
    CHECK(!joiner_table.Apply(AsEntry(admin.ledger[i], i)).has_value());
    CHECK(!cloud_table.Apply(AsEntry(admin.ledger[i], i)).has_value());
  }
  mesh::PeerTableView jv = joiner_table.Compute(), cv = cloud_table.Compute();
  REQUIRE(jv.peers.size() == 1);
  CHECK(jv.peers[0].node_name == "cloud");
  CHECK(jv.peers[0].endpoint == "203.0.113.7:51820");
  CHECK(jv.peers[0].allowed_ips == std::vector<std::string>{"10.8.0.1/32"});
  REQUIRE(cv.peers.size() == 1);
  CHECK(cv.peers[0].public_key == joiner.wg.public_key);
  CHECK(cv.peers[0].endpoint == "192.0.2.3:51820");

  SECTION("a joiner may not take the founding node's name") {
    Joiner impostor(absl::Seconds(600), "cloud");
    absl::Status s = admin.core->Approve(impostor.address(), impostor.code).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(s.message() == "node name \"cloud\" is not allowed");
    CHECK(admin.ledger.size() == 2);
  }
  SECTION("nor a service's name, which a service certificate carries as its DNS name") {
    for (const char* name : {"localhost", "scheduler", "fleet", "ledger"}) {
      Joiner impostor(absl::Seconds(600), name);
      absl::Status s = admin.core->Approve(impostor.address(), impostor.code).status();
      CHECK(s.message() == absl::StrCat("node name \"", name, "\" is not allowed"));
    }
    CHECK(admin.ledger.size() == 2);
  }
}

TEST_CASE("an incomplete founding record is refused and appends nothing", "[pairing][founding]") {
  Admin admin("Not A Name");
  CHECK(admin.core->AppendFoundingJoin().status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(admin.ledger.empty());
}

TEST_CASE("a joiner's malformed WireGuard endpoint is refused at approval", "[pairing][ceremony]") {
  Joiner joiner(absl::Seconds(600), "laptop-c", "192.0.2.3");
  Admin admin;
  absl::Status s = admin.core->Approve(joiner.address(), joiner.code).status();
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.message() == "the joiner's WireGuard endpoint \"192.0.2.3\" is not host:port");
  CHECK(admin.ledger.empty());
  CHECK(admin.core->Peers().size() == 1);
}

TEST_CASE("a joiner behind NAT joins without an endpoint", "[pairing][ceremony]") {
  Joiner joiner(absl::Seconds(600), "laptop-d", "");
  Admin admin;
  REQUIRE(admin.core->Approve(joiner.address(), joiner.code).ok());
  REQUIRE(admin.ledger.size() == 1);
  CHECK(admin.ledger[0].attributes().at("wireguard_endpoint").empty());
}

TEST_CASE("a joiner whose agent serves on its mesh address gives only the port", "[pairing][ceremony]") {
  Joiner joiner(absl::Seconds(600), "laptop-e", "192.0.2.5:51820", ":7110");
  Admin admin;
  REQUIRE(admin.core->Approve(joiner.address(), joiner.code).ok());
  REQUIRE(admin.ledger.size() == 1);
  CHECK(admin.ledger[0].attributes().at("agent_address") == "10.8.0.2:7110");
  CHECK(admin.ledger[0].attributes().at("mesh_address") == "10.8.0.2");
}

}  // namespace
}  // namespace ppn::pairing

namespace ppn::pairing {
namespace {

TEST_CASE("revoking a node appends node.revoke once and its name can never join again", "[pairing][revoke]") {
  Admin admin;
  {
    Joiner joiner;
    REQUIRE(admin.core->Approve(joiner.address(), joiner.code).ok());
  }
  REQUIRE(admin.ledger.size() == 1);
  const std::string fingerprint = admin.ledger[0].attributes().at("certificate_sha256");
  CHECK(fingerprint.size() == 64);

  CHECK(admin.core->Revoke("laptop-c", "", "spiffe://ppn.test/operator/alice").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(admin.core->Revoke("laptop-c", "bad\nline", "spiffe://ppn.test/operator/alice").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(admin.core->Revoke("admin", "no", "spiffe://ppn.test/operator/alice").status().code() ==
        absl::StatusCode::kInvalidArgument);
  absl::StatusOr<RevokeNodeResponse> unknown = admin.core->Revoke("laptop-z", "gone", "x");
  CHECK(unknown.status().code() == absl::StatusCode::kNotFound);
  CHECK(unknown.status().message() == "node laptop-z never joined this mesh");
  REQUIRE(admin.ledger.size() == 1);  // nothing appended for any of them

  absl::StatusOr<RevokeNodeResponse> revoked =
      admin.core->Revoke("laptop-c", "laptop stolen", "spiffe://ppn.test/operator/alice");
  REQUIRE(revoked.ok());
  CHECK(revoked->spiffe_id() == "spiffe://ppn.test/host/laptop-c");
  CHECK_FALSE(revoked->already_revoked());
  REQUIRE(admin.ledger.size() == 2);
  const ppn::ledger::v1::AppendRequest& entry = admin.ledger[1];
  CHECK(entry.kind() == "node.revoke");
  CHECK(entry.subject() == "laptop-c");
  CHECK(entry.attributes().at("spiffe_id") == "spiffe://ppn.test/host/laptop-c");
  CHECK(entry.attributes().at("reason") == "laptop stolen");
  CHECK(entry.attributes().at("actor") == "spiffe://ppn.test/operator/alice");
  CHECK(entry.attributes().at("certificate_sha256") == fingerprint);
  CHECK(revoked->ledger_index() == 1);
  CHECK(admin.core->Peers().size() == 1);  // no longer a WireGuard peer of anyone

  absl::StatusOr<RevokeNodeResponse> again = admin.core->Revoke("laptop-c", "twice", "x");
  REQUIRE(again.ok());
  CHECK(again->already_revoked());
  CHECK(again->ledger_index() == 1);
  CHECK(admin.ledger.size() == 2);

  // The same machine, a new ceremony, the old name: refused; a new name: admitted.
  {
    Joiner joiner;
    absl::StatusOr<ApproveNodeResponse> rejoin = admin.core->Approve(joiner.address(), joiner.code);
    CHECK(rejoin.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(rejoin.status().message() == "node laptop-c was revoked (ledger entry 1): join it under a new name");
  }
  {
    Joiner joiner(absl::Seconds(600), "laptop-d");
    REQUIRE(admin.core->Approve(joiner.address(), joiner.code).ok());
  }
  CHECK(admin.core->Peers().size() == 2);
}

}  // namespace
}  // namespace ppn::pairing

namespace ppn::pairing {
namespace {

TEST_CASE("RevokeNode over mTLS answers the operator with the entry and refuses a node's certificate",
          "[pairing][revoke]") {
  ppn::testing::TestPki pki("ppn.test");
  Admin admin;
  {
    Joiner joiner;
    REQUIRE(admin.core->Approve(joiner.address(), joiner.code).ok());
  }
  AdminService service(admin.core.get());
  StartedServer server = *StartMeshServer("127.0.0.1:0", pki.Issue("pairing-admin", "admin"),
                                          PairingAdminRolePolicy("ppn.test"), {&service});
  auto call = [&](const std::string& role, const std::string& name, RevokeNodeResponse* out) {
    auto stub = PairingAdmin::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port), MtlsChannelCredentials(pki.Issue(role, name))));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    RevokeNodeRequest req;
    req.set_node_name("laptop-c");
    req.set_reason("laptop stolen");
    return stub->RevokeNode(&ctx, req, out);
  };
  RevokeNodeResponse resp;
  CHECK(call("host", "laptop-d", &resp).error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(call("fleet", "fleet", &resp).error_code() == grpc::StatusCode::PERMISSION_DENIED);
  REQUIRE(admin.ledger.size() == 1);
  grpc::Status s = call("operator", "alice", &resp);
  INFO(s.error_message());
  REQUIRE(s.ok());
  CHECK(resp.spiffe_id() == "spiffe://ppn.test/host/laptop-c");
  REQUIRE(admin.ledger.size() == 2);
  CHECK(admin.ledger[1].attributes().at("actor") == "spiffe://ppn.test/operator/alice");
  server.server->Shutdown();
}

}  // namespace
}  // namespace ppn::pairing
