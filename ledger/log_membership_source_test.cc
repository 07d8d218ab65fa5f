#include "ledger/log_membership_source.h"

#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/revocation_follower.h"
#include "tests/harness/temp_dir.h"

namespace ppn::ledger {
namespace {

TEST_CASE("the ledger revokes from its own log the identities its node.revoke entries name", "[ledger][revocation]") {
  ppn::testing::TempDir dir;
  auto store = *LedgerStore::Open(dir.File("ledger.db"));
  MerkleLog log(store.get(), *NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'n')), RealClock::Get(),
                MerkleLog::Options{"ppn.test/ledger"});
  REQUIRE(log.Start().ok());
  SpiffeId admin{"ppn.test", "pairing-admin", "admin"};
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind("tenant.vm.create");
  entry.set_tenant_id("acme");
  entry.set_subject("vm-1");
  entry.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  REQUIRE(log.Append(SpiffeId{"ppn.test", "tenant-proxy", "proxy"}, entry).ok());
  entry.set_kind("node.join");
  entry.set_tenant_id("");
  entry.set_subject("laptop-b");
  REQUIRE(log.Append(admin, entry).ok());

  LogMembershipSource source(&log);
  absl::StatusOr<mesh::MembershipBatch> first = source.Next(absl::ZeroDuration());
  REQUIRE(first.ok());
  CHECK(first->caught_up);
  REQUIRE(first->entries.size() == 1);  // only node.* entries
  CHECK(first->entries[0].kind() == "node.join");

  auto list = RevocationList::InMemory("ppn.test");
  RevocationFollower follower(&source, list.get());
  entry.set_kind("node.revoke");
  REQUIRE(log.Append(admin, entry).ok());
  CHECK(follower.RunOnce(absl::Seconds(5)) == 1);
  CHECK(list->IsRevoked("spiffe://ppn.test/host/laptop-b"));
  log.Stop();
}

}  // namespace
}  // namespace ppn::ledger
