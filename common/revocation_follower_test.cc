#include "common/revocation_follower.h"

#include "catch2/catch.hpp"
#include "mesh/testing/fake_membership_source.h"

namespace ppn {
namespace {

TEST_CASE("the follower revokes the identities the ledger's node.revoke entries name", "[common][revocation]") {
  mesh::testing::FakeLedger ledger;
  ledger.Join("laptop-a", "key-a", "10.8.0.2");
  ledger.Join("laptop-b", "key-b", "10.8.0.3");
  auto list = RevocationList::InMemory("ppn.test");
  std::unique_ptr<mesh::MembershipSource> reader = ledger.Reader();
  RevocationFollower follower(reader.get(), list.get());
  CHECK(follower.RunOnce(absl::ZeroDuration()) == 0);
  ledger.Revoke("laptop-b");
  CHECK(follower.RunOnce(absl::Seconds(5)) == 1);
  CHECK(list->IsRevoked("spiffe://ppn.test/host/laptop-b"));
  CHECK_FALSE(list->IsRevoked("spiffe://ppn.test/host/laptop-a"));
}

TEST_CASE("an unreachable ledger leaves the list as it was", "[common][revocation]") {
  mesh::testing::FakeLedger ledger;
  ledger.Revoke("laptop-b");
  auto list = RevocationList::InMemory("ppn.test");
  std::unique_ptr<mesh::MembershipSource> reader = ledger.Reader();
  RevocationFollower follower(reader.get(), list.get());
  REQUIRE(follower.RunOnce(absl::Seconds(5)) == 1);
  ledger.SetUnavailable(absl::UnavailableError("ledger down"));
  CHECK(follower.RunOnce(absl::Milliseconds(10)) == 0);
  CHECK(list->IsRevoked("spiffe://ppn.test/host/laptop-b"));
}

}  // namespace
}  // namespace ppn
