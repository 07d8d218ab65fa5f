// GrpcMembershipSource against a real ledger over mTLS: the catch-up, live entries, only
// node.* entries, and a resumed stream after the ledger restarts.

#include "mesh/grpc_membership_source.h"

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ledger/ledger_server.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn::mesh {
namespace {

using ppn::ledger::v1::AppendRequest;
using ppn::ledger::v1::Entry;

struct Ledger {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  ppn::testing::FakeClock clock;
  std::unique_ptr<ppn::ledger::LedgerStore> store = *ppn::ledger::LedgerStore::Open(dir.File("ledger.db"));
  ppn::ledger::MerkleLog log{store.get(), *ppn::ledger::NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'q')),
                             &clock, ppn::ledger::MerkleLog::Options{"ppn.test/ledger"}};
  ppn::ledger::LedgerService service{&log};
  TlsFiles ledger_tls = pki.Issue("ledger", "ledger");
  StartedServer server;
  int port = 0;

  Ledger() {
    REQUIRE(log.Start().ok());
    Serve("127.0.0.1:0");
    port = server.port;
  }
  ~Ledger() {
    if (server.server != nullptr) server.server->Shutdown(std::chrono::system_clock::now());
    log.Stop();
  }
  void Serve(const std::string& listen) {
    absl::StatusOr<StartedServer> started = ppn::ledger::StartLedgerServer("ppn.test", listen, ledger_tls, &service);
    REQUIRE(started.ok());
    server = std::move(*started);
  }
  void Restart() {
    server.server->Shutdown(std::chrono::system_clock::now());
    server = {};
    Serve(absl::StrCat("127.0.0.1:", port));
  }
  void Append(const std::string& kind, const std::string& subject) {
    AppendRequest r;
    r.set_kind(kind);
    r.set_subject(subject);
    r.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
    bool tenant = kind.rfind("tenant.", 0) == 0;
    if (tenant) r.set_tenant_id("acme");
    SpiffeId actor{"ppn.test", tenant ? "tenant-proxy" : "pairing-admin", tenant ? "proxy" : "admin"};
    REQUIRE(log.Append(actor, r).ok());
  }
  std::shared_ptr<grpc::Channel> HostChannel() {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), MtlsChannelCredentials(pki.Issue("host", "laptop-a")));
  }
};

// Everything the source returns within `timeout`, until `count` entries and caught up.
MembershipBatch Collect(MembershipSource& source, size_t count, absl::Duration timeout = absl::Seconds(10)) {
  MembershipBatch all;
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline && (all.entries.size() < count || !all.caught_up)) {
    absl::StatusOr<MembershipBatch> b = source.Next(absl::Milliseconds(100));
    if (!b.ok()) continue;
    for (Entry& e : b->entries) all.entries.push_back(std::move(e));
    all.caught_up = b->caught_up;
  }
  return all;
}

TEST_CASE("the source catches up with the ledger's node entries and then follows it", "[mesh][membership]") {
  Ledger ledger;
  ledger.Append("node.join", "cloud");
  ledger.Append("tenant.vm.create", "vm-1");
  ledger.Append("node.join", "laptop-a");
  ledger.Append("tenant.vm.create", "vm-2");
  GrpcMembershipSource source(ledger.HostChannel());
  source.Start();
  MembershipBatch first = Collect(source, 2);
  CHECK(first.caught_up);
  REQUIRE(first.entries.size() == 2);
  CHECK(first.entries[0].index() == 0);
  CHECK(first.entries[0].subject() == "cloud");
  CHECK(first.entries[1].index() == 2);

  absl::Time appended = absl::Now();
  ledger.Append("node.revoke", "laptop-a");
  MembershipBatch live = Collect(source, 1);
  REQUIRE(live.entries.size() == 1);
  CHECK(live.entries[0].kind() == "node.revoke");
  CHECK(live.entries[0].index() == 4);
  CHECK(absl::Now() - appended < absl::Seconds(1));

  SECTION("after the ledger restarts it resumes where it was, without repeats") {
    ledger.Restart();
    ledger.Append("node.join", "laptop-b");
    MembershipBatch resumed = Collect(source, 1);
    REQUIRE(resumed.entries.size() == 1);
    CHECK(resumed.entries[0].subject() == "laptop-b");
    CHECK(resumed.entries[0].index() == 5);
  }
  source.Stop();
}

TEST_CASE("an empty ledger is caught up at once", "[mesh][membership]") {
  Ledger ledger;
  GrpcMembershipSource source(ledger.HostChannel());
  source.Start();
  CHECK(Collect(source, 0).caught_up);
}

TEST_CASE("an unreachable ledger is UNAVAILABLE with the reason", "[mesh][membership]") {
  Ledger ledger;
  ledger.server.server->Shutdown(std::chrono::system_clock::now());
  ledger.server = {};
  GrpcMembershipSource source(ledger.HostChannel());
  source.Start();
  absl::StatusOr<MembershipBatch> b = source.Next(absl::Milliseconds(500));
  CHECK(b.status().code() == absl::StatusCode::kUnavailable);
  source.Stop();
}

}  // namespace
}  // namespace ppn::mesh
