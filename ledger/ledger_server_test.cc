// The ledger over real mTLS sockets: role checks before the handler, appends whose proofs
// verify against the signed checkpoint, paging and the live stream.

#include "ledger/ledger_server.h"

#include <thread>

#include "catch2/catch.hpp"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn::ledger {
namespace {

using namespace ppn::ledger::v1;  // NOLINT: test brevity

std::chrono::system_clock::time_point Deadline() { return std::chrono::system_clock::now() + std::chrono::seconds(10); }

struct Fixture {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  ppn::testing::FakeClock clock;
  std::unique_ptr<LedgerStore> store = *LedgerStore::Open(dir.File("ledger.db"));
  MerkleLog log{store.get(), *NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'q')), &clock,
                MerkleLog::Options{"ppn.test/ledger"}};
  LedgerService service{&log};
  StartedServer server;

  Fixture() {
    REQUIRE(log.Start().ok());
    auto started = StartLedgerServer("ppn.test", "127.0.0.1:0", pki.Issue("ledger", "ledger"), &service);
    REQUIRE(started.ok());
    server = std::move(*started);
  }
  ~Fixture() {
    server.server->Shutdown(Deadline());
    log.Stop();
  }
  std::unique_ptr<Ledger::Stub> Stub(const std::string& role) {
    return Ledger::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port),
                                               MtlsChannelCredentials(pki.Issue(role, role + "-1"))));
  }
};

AppendRequest Create(const std::string& vm) {
  AppendRequest r;
  r.set_kind("tenant.vm.create");
  r.set_tenant_id("acme");
  r.set_subject(vm);
  r.set_outcome(OUTCOME_SUCCESS);
  return r;
}

TEST_CASE("an appended entry's inclusion proof verifies against the signed checkpoint", "[ledger][grpc]") {
  Fixture f;
  auto proxy = f.Stub("tenant-proxy");
  AppendResponse appended;
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(proxy->Append(&ctx, Create("vm-" + std::to_string(i)), &appended).ok());
  }
  CHECK(appended.index() == 4);

  auto op = f.Stub("operator");
  GetCheckpointResponse cp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(op->GetCheckpoint(&ctx, {}, &cp).ok());
  }
  CHECK(cp.tree_size() == 5);
  std::string text;
  REQUIRE(OpenNote(*ParseVerifierKey(cp.verifier_key()), cp.signed_note(), &text) == NoteVerdict::kVerified);
  CHECK(ParseCheckpoint(text)->root_hash == cp.root_hash());

  GetInclusionProofRequest req;
  req.set_leaf_index(4);
  GetInclusionProofResponse proof;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(op->GetInclusionProof(&ctx, req, &proof).ok());
  }
  std::vector<Hash> path(proof.hashes().begin(), proof.hashes().end());
  CHECK(VerifyInclusion(4, 5, appended.leaf_hash(), path, cp.root_hash()).ok());

  GetEntriesRequest page;
  page.set_start_index(1);
  page.set_page_size(2);
  GetEntriesResponse entries;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(op->GetEntries(&ctx, page, &entries).ok());
  }
  REQUIRE(entries.entries_size() == 2);
  CHECK(entries.entries(0).subject() == "vm-1");
  CHECK(entries.entries(0).actor() == "spiffe://ppn.test/tenant-proxy/tenant-proxy-1");
  CHECK(entries.next_index() == 3);
}

TEST_CASE("AppendBatch appends several entries in order over the wire", "[ledger][grpc]") {
  Fixture f;
  AppendBatchRequest req;
  for (int i = 0; i < 4; ++i) *req.add_entries() = Create("vm-" + std::to_string(i));
  AppendBatchResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  REQUIRE(f.Stub("tenant-proxy")->AppendBatch(&ctx, req, &resp).ok());
  REQUIRE(resp.results_size() == 4);
  for (int i = 0; i < 4; ++i) CHECK(resp.results(i).index() == static_cast<uint64_t>(i));
  grpc::ClientContext denied;
  denied.set_deadline(Deadline());
  AppendBatchResponse none;
  CHECK(f.Stub("host")->AppendBatch(&denied, req, &none).error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(f.log.size() == 4);
}

TEST_CASE("the ledger refuses appends by role and by kind", "[ledger][grpc][authz]") {
  Fixture f;
  AppendResponse response;
  SECTION("a host may not append at all") {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = f.Stub("host")->Append(&ctx, Create("vm-1"), &response);
    CHECK(s.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK(s.error_message() == "role host may not call /ppn.ledger.v1.Ledger/Append");
  }
  SECTION("the fleet may not append tenant events") {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = f.Stub("fleet")->Append(&ctx, Create("vm-1"), &response);
    CHECK(s.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK(s.error_message() == "role fleet may not append entries of kind tenant.vm.create");
  }
  SECTION("a malformed append is INVALID_ARGUMENT") {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    AppendRequest r = Create("vm-1");
    r.set_outcome(OUTCOME_UNSPECIFIED);
    CHECK(f.Stub("tenant-proxy")->Append(&ctx, r, &response).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  }
  CHECK(f.log.size() == 0);
}

TEST_CASE("WatchEntries streams stored entries then live ones", "[ledger][grpc]") {
  Fixture f;
  auto proxy = f.Stub("tenant-proxy");
  AppendResponse r;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(proxy->Append(&ctx, Create("before"), &r).ok());
  }
  auto op = f.Stub("operator");
  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(Deadline());
  auto reader = op->WatchEntries(&watch_ctx, WatchEntriesRequest());
  WatchEntriesResponse msg;
  REQUIRE(reader->Read(&msg));
  CHECK(msg.entry().subject() == "before");
  std::thread appender([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    AppendResponse ignored;
    proxy->Append(&ctx, Create("after"), &ignored);
  });
  REQUIRE(reader->Read(&msg));
  CHECK(msg.entry().subject() == "after");
  CHECK(msg.entry().index() == 1);
  appender.join();
  watch_ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  reader->Finish();
}

TEST_CASE("consistency proofs link an old checkpoint to a new one", "[ledger][grpc]") {
  Fixture f;
  auto proxy = f.Stub("tenant-proxy");
  auto op = f.Stub("operator");
  AppendResponse r;
  auto append = [&](const std::string& vm) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(proxy->Append(&ctx, Create(vm), &r).ok());
  };
  auto checkpoint = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    GetCheckpointResponse cp;
    REQUIRE(op->GetCheckpoint(&ctx, {}, &cp).ok());
    return cp;
  };
  for (int i = 0; i < 3; ++i) append("a" + std::to_string(i));
  GetCheckpointResponse old_cp = checkpoint();
  for (int i = 0; i < 7; ++i) append("b" + std::to_string(i));
  GetCheckpointResponse new_cp = checkpoint();
  GetConsistencyProofRequest req;
  req.set_first_tree_size(old_cp.tree_size());
  req.set_second_tree_size(new_cp.tree_size());
  GetConsistencyProofResponse proof;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  REQUIRE(op->GetConsistencyProof(&ctx, req, &proof).ok());
  std::vector<Hash> path(proof.hashes().begin(), proof.hashes().end());
  CHECK(VerifyConsistency(3, 10, old_cp.root_hash(), new_cp.root_hash(), path).ok());
}

}  // namespace
}  // namespace ppn::ledger
