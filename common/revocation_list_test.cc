#include "common/revocation_list.h"

#include "catch2/catch.hpp"
#include "common/files.h"
#include "tests/harness/temp_dir.h"

namespace ppn {
namespace {

ppn::ledger::v1::Entry RevokeEntry(const std::string& node, uint64_t index) {
  ppn::ledger::v1::Entry e;
  e.set_index(index);
  e.set_kind("node.revoke");
  e.set_subject(node);
  e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  (*e.mutable_attributes())["reason"] = "laptop stolen";
  return e;
}

TEST_CASE("a node.revoke entry refuses the node's identity and nothing else", "[common][revocation]") {
  auto list = RevocationList::InMemory("ppn.test");
  SpiffeId node{"ppn.test", "host", "laptop-b"};
  SpiffeId other{"ppn.test", "host", "laptop-c"};
  CHECK(list->Check(node).ok());
  REQUIRE(*list->Apply(RevokeEntry("laptop-b", 7)));
  absl::Status refused = list->Check(node);
  CHECK(refused.code() == absl::StatusCode::kUnauthenticated);
  CHECK(refused.message() == "certificate of spiffe://ppn.test/host/laptop-b was revoked (ledger entry 7, node.revoke)");
  CHECK(list->Check(other).ok());
  CHECK(list->Check(SpiffeId{"ppn.test", "fleet", "laptop-b"}).ok());
  CHECK_FALSE(*list->Apply(RevokeEntry("laptop-b", 9)));  // once is enough
  REQUIRE(list->List().size() == 1);
  CHECK(list->List()[0].reason == "laptop stolen");
}

TEST_CASE("revocation entries that failed or are of another kind change nothing", "[common][revocation]") {
  auto list = RevocationList::InMemory("ppn.test");
  ppn::ledger::v1::Entry failed = RevokeEntry("laptop-b", 1);
  failed.set_outcome(ppn::ledger::v1::OUTCOME_FAILURE);
  CHECK_FALSE(*list->Apply(failed));
  ppn::ledger::v1::Entry join = RevokeEntry("laptop-b", 2);
  join.set_kind("node.join");
  CHECK_FALSE(*list->Apply(join));
  CHECK_FALSE(*list->Apply(RevokeEntry("not/a/name", 3)));
  CHECK(list->List().empty());
}

TEST_CASE("the entry's spiffe_id attribute names the identity when present", "[common][revocation]") {
  auto list = RevocationList::InMemory("ppn.test");
  ppn::ledger::v1::Entry e = RevokeEntry("laptop-b", 4);
  (*e.mutable_attributes())["spiffe_id"] = "spiffe://ppn.test/host/laptop-b";
  (*e.mutable_attributes())["certificate_sha256"] = "ab12";
  REQUIRE(*list->Apply(e));
  CHECK(list->IsRevoked("spiffe://ppn.test/host/laptop-b"));
  CHECK(list->List()[0].certificate_sha256 == "ab12");
}

TEST_CASE("revocations survive a restart of the service that holds the list", "[common][revocation]") {
  ppn::testing::TempDir dir;
  std::string path = dir.File("revoked.json");
  {
    auto list = *RevocationList::Open(path, "ppn.test");
    REQUIRE(*list->Apply(RevokeEntry("laptop-b", 7)));
  }
  auto reopened = RevocationList::Open(path, "ppn.test");
  REQUIRE(reopened.ok());
  CHECK((*reopened)->Check(SpiffeId{"ppn.test", "host", "laptop-b"}).code() == absl::StatusCode::kUnauthenticated);
  CHECK((*reopened)->List()[0].ledger_index == 7);
}

TEST_CASE("a revocation file that does not parse stops the service from starting", "[common][revocation]") {
  ppn::testing::TempDir dir;
  std::string path = dir.File("revoked.json");
  for (const char* text : {"not json", "{\"revoked\": 3}", "{\"revoked\": [{\"spiffe_id\": 5}]}", "[]"}) {
    REQUIRE(WriteFileAtomically(path, text).ok());
    auto list = RevocationList::Open(path, "ppn.test");
    CHECK(list.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace ppn
