// The ledger mirror against real ledger servers on 127.0.0.1 (mTLS, the host role): it follows,
// catches up, resumes after a reopen, refuses a rewritten history, a forged signature and a
// tampered entry while keeping its last good state, and its file is a ledger file that the
// ledger's own code serves and the offline verifier accepts.

#include "ledger/mirror.h"

#include <filesystem>

#include "catch2/catch.hpp"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ledger/grpc_ledger_source.h"
#include "ledger/ledger_server.h"
#include "ledger/verifier.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn::ledger {
namespace {

using namespace ppn::ledger::v1;  // NOLINT: test brevity

const std::string kSeed(32, 'q');

NoteSigner Signer(const std::string& seed = kSeed) { return *NoteSigner::FromSeed("ppn.test/ledger", seed); }

// One ledger server (its own file) on a port of its own.
struct LedgerUnderTest {
  LedgerUnderTest(ppn::testing::TempDir& dir, ppn::testing::TestPki& pki, const std::string& name,
                  const std::string& seed = kSeed)
      : store(*LedgerStore::Open(dir.File(name))),
        log(store.get(), Signer(seed), &clock, MerkleLog::Options{"ppn.test/ledger", absl::ZeroDuration()}),
        service(&log) {
    REQUIRE(log.Start().ok());
    auto started = StartLedgerServer("ppn.test", "127.0.0.1:0", pki.Issue("ledger", "ledger"), &service);
    REQUIRE(started.ok());
    server = std::move(*started);
    source = std::make_unique<GrpcLedgerSource>(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server.port), MtlsChannelCredentials(pki.Issue("host", "laptop-b"))));
  }
  ~LedgerUnderTest() {
    server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    log.Stop();
  }
  void Append(int n, const std::string& prefix = "vm-") {
    for (int i = 0; i < n; ++i) {
      AppendRequest r;
      r.set_kind("tenant.vm.create");
      r.set_tenant_id("acme");
      r.set_subject(prefix + std::to_string(log.size()));
      r.set_outcome(OUTCOME_SUCCESS);
      REQUIRE(log.Append(SpiffeId{"ppn.test", "tenant-proxy", "proxy-1"}, r).ok());
    }
  }
  Hash Root() { return log.Checkpoint()->root_hash; }

  ppn::testing::FakeClock clock;
  std::unique_ptr<LedgerStore> store;
  MerkleLog log;
  LedgerService service;
  StartedServer server;
  std::unique_ptr<GrpcLedgerSource> source;
};

Hash RootOf(const std::string& note) {
  std::string text;
  REQUIRE(OpenNote(*ParseVerifierKey(Signer().VerifierKey()), note, &text) == NoteVerdict::kVerified);
  return ParseCheckpoint(text)->root_hash;
}

// Passes the ledger's answers through, after `edit` had its say.
struct TamperingSource final : LedgerSource {
  LedgerSource* real;
  std::function<void(GetCheckpointResponse*)> edit_checkpoint = [](GetCheckpointResponse*) {};
  std::function<void(GetEntriesResponse*)> edit_entries = [](GetEntriesResponse*) {};
  std::function<void(std::vector<Hash>*)> edit_proof = [](std::vector<Hash>*) {};
  explicit TamperingSource(LedgerSource* r) : real(r) {}
  absl::StatusOr<GetCheckpointResponse> GetCheckpoint() override {
    auto r = real->GetCheckpoint();
    if (r.ok()) edit_checkpoint(&*r);
    return r;
  }
  absl::StatusOr<GetEntriesResponse> GetEntries(uint64_t start, int page) override {
    auto r = real->GetEntries(start, page);
    if (r.ok()) edit_entries(&*r);
    return r;
  }
  absl::StatusOr<std::vector<Hash>> GetConsistencyProof(uint64_t a, uint64_t b) override {
    auto r = real->GetConsistencyProof(a, b);
    if (r.ok()) edit_proof(&*r);
    return r;
  }
};

TEST_CASE("the mirror holds every entry with the ledger's root, catches up, and resumes after a reopen",
          "[ledger][mirror][grpc]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  LedgerUnderTest ledger(dir, pki, "ledger.db");
  ledger.Append(5);
  LedgerMirror::Options options;
  options.verifier_key = Signer().VerifierKey();
  options.page_size = 2;  // several pages
  {
    auto mirror = *LedgerMirror::Open(dir.File("mirror.db"), ledger.source.get(), options);
    REQUIRE(mirror->SyncOnce().ok());
    CHECK(mirror->size() == 5);
    CHECK(RootOf(mirror->LatestCheckpointNote()) == ledger.Root());
    CHECK(mirror->Warning().empty());
    ledger.Append(3);
    REQUIRE(mirror->SyncOnce().ok());
    CHECK(mirror->size() == 8);
    CHECK(RootOf(mirror->LatestCheckpointNote()) == ledger.Root());
  }
  ledger.Append(2);
  auto reopened = *LedgerMirror::Open(dir.File("mirror.db"), ledger.source.get(), options);
  CHECK(reopened->size() == 8);
  REQUIRE(reopened->SyncOnce().ok());
  CHECK(reopened->size() == 10);
}

TEST_CASE("a ledger that rewrote its history under the same key is refused and the mirror keeps its state",
          "[ledger][mirror][grpc]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  LedgerUnderTest honest(dir, pki, "honest.db");
  honest.Append(4);
  auto mirror = *LedgerMirror::Open(dir.File("mirror.db"), honest.source.get(), {});
  REQUIRE(mirror->SyncOnce().ok());
  const std::string good = mirror->LatestCheckpointNote();

  // Same key, same origin, a different history that is longer.
  LedgerUnderTest forked(dir, pki, "forked.db");
  forked.Append(6, "other-");
  auto followed = *LedgerMirror::Open(dir.File("mirror.db"), forked.source.get(), {});
  mirror.reset();
  absl::Status refused = followed->SyncOnce();
  CHECK(refused.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(refused.message()), Catch::Contains("rewritten history"));
  CHECK_THAT(followed->Warning(), Catch::Contains("keeping the copy of 4 verified entries"));
  CHECK(followed->size() == 4);
  CHECK(followed->LatestCheckpointNote() == good);

  // Back on the honest ledger it carries on, and the warning clears.
  followed.reset();
  auto back = *LedgerMirror::Open(dir.File("mirror.db"), honest.source.get(), {});
  honest.Append(1);
  REQUIRE(back->SyncOnce().ok());
  CHECK(back->size() == 5);
  CHECK(back->Warning().empty());
}

TEST_CASE("a checkpoint signed by another key is refused", "[ledger][mirror][grpc]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  LedgerUnderTest impostor(dir, pki, "impostor.db", std::string(32, 'z'));
  impostor.Append(3);
  LedgerMirror::Options options;
  options.verifier_key = Signer().VerifierKey();
  auto mirror = *LedgerMirror::Open(dir.File("mirror.db"), impostor.source.get(), options);
  absl::Status refused = mirror->SyncOnce();
  CHECK(refused.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(refused.message()), Catch::Contains("signature does not verify"));
  CHECK(mirror->size() == 0);
}

TEST_CASE("an entry whose hash does not match its contents is refused and nothing is written",
          "[ledger][mirror][grpc]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  LedgerUnderTest ledger(dir, pki, "ledger.db");
  ledger.Append(3);
  TamperingSource tampering(ledger.source.get());
  auto mirror = *LedgerMirror::Open(dir.File("mirror.db"), &tampering, {});
  REQUIRE(mirror->SyncOnce().ok());
  ledger.Append(3);
  tampering.edit_entries = [](GetEntriesResponse* r) {
    if (r->entries_size() > 1) r->mutable_entries(1)->set_subject("vm-hidden");
  };
  absl::Status refused = mirror->SyncOnce();
  CHECK(refused.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(refused.message()), Catch::Contains("entry 4's hash does not match"));
  CHECK(mirror->size() == 3);
}

TEST_CASE("a consistency proof that does not verify is refused", "[ledger][mirror][grpc]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  LedgerUnderTest ledger(dir, pki, "ledger.db");
  ledger.Append(3);
  TamperingSource tampering(ledger.source.get());
  auto mirror = *LedgerMirror::Open(dir.File("mirror.db"), &tampering, {});
  REQUIRE(mirror->SyncOnce().ok());
  ledger.Append(2);
  tampering.edit_proof = [](std::vector<Hash>* proof) { proof->back()[0] ^= 1; };
  absl::Status refused = mirror->SyncOnce();
  CHECK(refused.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(refused.message()), Catch::Contains("consistency proof from size 3 to 5 does not verify"));
  CHECK(mirror->size() == 3);
}

TEST_CASE("the mirror's file is a ledger file: the ledger serves the same root and the verifier accepts it",
          "[ledger][mirror][grpc]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  Hash root;
  {
    LedgerUnderTest ledger(dir, pki, "ledger.db");
    ledger.Append(7);
    root = ledger.Root();
    auto mirror = *LedgerMirror::Open(dir.File("mirror.db"), ledger.source.get(), {});
    REQUIRE(mirror->SyncOnce().ok());
  }
  std::filesystem::copy_file(dir.File("mirror.db"), dir.File("restored.db"));
  VerifyOptions verify;
  verify.verifier_key = Signer().VerifierKey();
  auto report = VerifyLedgerFile(dir.File("restored.db"), verify);
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->entries == 7);
  CHECK(report->unanchored_entries == 0);

  LedgerUnderTest restored(dir, pki, "restored.db");
  CHECK(restored.log.size() == 7);
  CHECK(restored.Root() == root);
  auto checkpoint = *restored.source->GetCheckpoint();
  CHECK(checkpoint.root_hash() == root);
}

}  // namespace
}  // namespace ppn::ledger
