#include "tools/ppnctl/ledger_verify.h"

#include <map>

#include "catch2/catch.hpp"
#include "ledger/entry_codec.h"
#include "ledger/merkle.h"
#include "ledger/signed_note.h"

namespace ppn::ppnctl {
namespace {

namespace v1 = ppn::ledger::v1;

// An honest ledger in memory, signed by a key from `seed`; tests then make it lie.
class FakeLedger final : public LedgerReader {
 public:
  FakeLedger(const std::string& origin, char seed)
      : origin_(origin), signer_(*ledger::NoteSigner::FromSeed(origin, std::string(32, seed))) {}

  void Append(const std::string& subject) {
    v1::Entry e;
    e.set_index(entries_.size());
    e.set_kind("tenant.vm.create");
    e.set_actor("spiffe://ppn.test/tenant-proxy/p");
    e.mutable_append_time()->set_seconds(1700000000 + static_cast<int64_t>(entries_.size()));
    e.set_tenant_id("acme");
    e.set_subject(subject);
    e.set_outcome(v1::OUTCOME_SUCCESS);
    (*e.mutable_attributes())["node"] = "laptop-a";
    e.set_leaf_hash(ledger::HashLeaf(ledger::EncodeLeaf(e)));
    tree_.AppendLeaf(ledger::EncodeLeaf(e));
    entries_.push_back(e);
  }
  void AppendMany(int n, const std::string& prefix) {
    for (int i = 0; i < n; ++i) Append(prefix + std::to_string(i));
  }

  absl::StatusOr<v1::GetCheckpointResponse> GetCheckpoint() override {
    if (!fail_.ok()) return fail_;
    v1::GetCheckpointResponse r;
    uint64_t size = entries_.size();
    std::string root = *ledger::RootHash(tree_, size);
    r.set_signed_note(*signer_.Sign(ledger::MarshalCheckpoint({origin_, size, root, ""})));
    r.set_tree_size(size);
    r.set_root_hash(root);
    r.set_verifier_key(signer_.VerifierKey());
    if (tamper_note_) (*r.mutable_signed_note())[origin_.size() + 1] ^= 1;
    return r;
  }
  absl::StatusOr<v1::GetEntriesResponse> GetEntries(const v1::GetEntriesRequest& request) override {
    v1::GetEntriesResponse r;
    // Three at a time, so that verify has to page.
    for (uint64_t i = request.start_index(); i < entries_.size() && r.entries_size() < 3; ++i) {
      *r.add_entries() = served_.count(i) ? served_[i] : entries_[i];
    }
    r.set_next_index(request.start_index() + r.entries_size());
    return r;
  }
  absl::StatusOr<v1::GetConsistencyProofResponse> GetConsistencyProof(
      const v1::GetConsistencyProofRequest& request) override {
    v1::GetConsistencyProofResponse r;
    r.set_first_tree_size(request.first_tree_size());
    r.set_second_tree_size(request.second_tree_size());
    auto proof = ledger::ConsistencyProof(tree_, request.first_tree_size(), request.second_tree_size());
    if (!proof.ok()) return proof.status();
    for (const auto& h : *proof) r.add_hashes(h);
    if (tamper_proof_ && r.hashes_size() > 0) (*r.mutable_hashes(0))[0] ^= 1;
    ++consistency_calls_;
    return r;
  }

  std::string key() const { return signer_.VerifierKey(); }
  // Serves `e` at position `i` instead of the entry in the tree.
  void ServeAt(uint64_t i, const v1::Entry& e) { served_[i] = e; }
  const v1::Entry& entry(size_t i) const { return entries_[i]; }

  bool tamper_note_ = false;
  bool tamper_proof_ = false;
  absl::Status fail_;
  int consistency_calls_ = 0;

 private:
  std::string origin_;
  ledger::NoteSigner signer_;
  std::vector<v1::Entry> entries_;
  std::map<uint64_t, v1::Entry> served_;
  ledger::MemoryTree tree_;
};

struct Fixture {
  KnownLedgers known = *KnownLedgers::Load("/nonexistent/known_ledgers");
  LedgerVerifyReport Verify(LedgerReader& ledger, const std::string& endpoint = "127.0.0.1:7101",
                            const std::string& key = "") {
    auto report = VerifyLedger(ledger, {endpoint, key}, &known);
    REQUIRE(report.ok());
    return *report;
  }
};

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST_CASE("the first verify pins the ledger's key and later ones check against it", "[ppnctl][ledger_verify]") {
  Fixture f;
  FakeLedger a("ppn.test/ledger", 'a');
  a.AppendMany(7, "vm-");
  LedgerVerifyReport first = f.Verify(a);
  INFO(first.problem);
  REQUIRE(first.ok);
  CHECK(first.first_use);
  CHECK(first.origin == "ppn.test/ledger");
  CHECK(first.verifier_key == a.key());
  CHECK(first.tree_size == 7);
  CHECK(first.consistent_with == 0);
  const KnownLedger* pinned = f.known.Find("ppn.test/ledger");
  REQUIRE(pinned != nullptr);
  CHECK(pinned->verifier_key == a.key());
  CHECK(pinned->tree_size == 7);
  CHECK(pinned->endpoints == std::vector<std::string>{"127.0.0.1:7101"});

  a.AppendMany(6, "more-");
  LedgerVerifyReport second = f.Verify(a);
  REQUIRE(second.ok);
  CHECK_FALSE(second.first_use);
  CHECK(second.consistent_with == 7);
  CHECK(a.consistency_calls_ == 1);
  CHECK(f.known.Find("ppn.test/ledger")->tree_size == 13);
  LedgerVerifyReport same = f.Verify(a);
  CHECK(same.ok);
  CHECK(same.consistent_with == 13);
}

TEST_CASE("a different ledger under the pinned name fails and names both keys", "[ppnctl][ledger_verify]") {
  Fixture f;
  FakeLedger a("ppn.test/ledger", 'a'), b("ppn.test/ledger", 'b');
  a.AppendMany(3, "vm-");
  b.AppendMany(3, "vm-");
  REQUIRE(f.Verify(a).ok);
  std::string before = f.known.Format();
  LedgerVerifyReport other = f.Verify(b, "127.0.0.1:9999");
  CHECK_FALSE(other.ok);
  CHECK(Has(other.problem, "ledger \"ppn.test/ledger\" is pinned to key " + a.key()));
  CHECK(Has(other.problem, "the ledger presents key " + b.key()));
  CHECK(Has(other.problem, "a different ledger, or its key was replaced"));
  CHECK(f.known.Format() == before);
}

TEST_CASE("another ledger answering at a verified endpoint fails whatever its name", "[ppnctl][ledger_verify]") {
  Fixture f;
  FakeLedger a("ppn.test/ledger", 'a'), other("evil.test/ledger", 'e');
  a.AppendMany(2, "vm-");
  other.AppendMany(2, "vm-");
  REQUIRE(f.Verify(a).ok);
  LedgerVerifyReport r = f.Verify(other);
  CHECK_FALSE(r.ok);
  CHECK(Has(r.problem, "the ledger at 127.0.0.1:7101 was \"ppn.test/ledger\""));
  CHECK(Has(r.problem, "now answers as \"evil.test/ledger\""));
  CHECK(f.Verify(other, "127.0.0.1:7200").ok);  // elsewhere it is a new ledger, pinned on first use
}

TEST_CASE("a rewritten history fails even when signed by the pinned key", "[ppnctl][ledger_verify]") {
  Fixture f;
  FakeLedger a("ppn.test/ledger", 'a');
  a.AppendMany(5, "vm-");
  REQUIRE(f.Verify(a).ok);
  SECTION("grown from a different past") {
    FakeLedger rewritten("ppn.test/ledger", 'a');
    rewritten.AppendMany(8, "forged-");
    LedgerVerifyReport r = f.Verify(rewritten);
    CHECK_FALSE(r.ok);
    CHECK(Has(r.problem, "checkpoint at size 8 is not consistent with the checkpoint verified before (size 5"));
    CHECK(Has(r.problem, "its history was rewritten"));
    CHECK(f.known.Find("ppn.test/ledger")->tree_size == 5);
  }
  SECTION("the same size with other entries") {
    FakeLedger rewritten("ppn.test/ledger", 'a');
    rewritten.AppendMany(5, "forged-");
    CHECK(Has(f.Verify(rewritten).problem, "'s root at size 5 is "));
  }
  SECTION("truncated") {
    FakeLedger truncated("ppn.test/ledger", 'a');
    truncated.AppendMany(4, "vm-");
    CHECK(Has(f.Verify(truncated).problem, "now commits to 4 entries, fewer than the checkpoint verified before"));
  }
  SECTION("a consistency proof that does not verify") {
    a.AppendMany(4, "more-");
    a.tamper_proof_ = true;
    CHECK(Has(f.Verify(a).problem, "is not consistent with the checkpoint verified before"));
  }
}

TEST_CASE("entries are hashed from their contents and must reproduce the signed root", "[ppnctl][ledger_verify]") {
  Fixture f;
  FakeLedger a("ppn.test/ledger", 'a');
  a.AppendMany(5, "vm-");
  SECTION("an entry whose contents do not match the hash sent with it") {
    v1::Entry e = a.entry(3);
    e.set_subject("vm-forged");
    a.ServeAt(3, e);
    CHECK(Has(f.Verify(a).problem, "entry 3: the leaf hash the ledger sends is not the hash of the entry's contents"));
  }
  SECTION("an altered entry sent with a matching hash") {
    v1::Entry e = a.entry(3);
    (*e.mutable_attributes())["node"] = "laptop-b";
    e.set_leaf_hash(ledger::HashLeaf(ledger::EncodeLeaf(e)));
    a.ServeAt(3, e);
    CHECK(Has(f.Verify(a).problem, "the 5 entries served do not reproduce the signed root"));
  }
  SECTION("an entry out of place") {
    a.ServeAt(2, a.entry(4));
    CHECK(Has(f.Verify(a).problem, "the ledger served entry 4 where entry 2 belongs"));
  }
  CHECK(f.known.Find("ppn.test/ledger") == nullptr);  // nothing is pinned when verify fails
}

TEST_CASE("an altered checkpoint or a configured key that did not sign it fails", "[ppnctl][ledger_verify]") {
  Fixture f;
  FakeLedger a("ppn.test/ledger", 'a'), b("ppn.test/ledger", 'b');
  a.AppendMany(3, "vm-");
  a.tamper_note_ = true;
  CHECK(Has(f.Verify(a).problem, "does not verify: the checkpoint was altered"));
  a.tamper_note_ = false;
  LedgerVerifyReport r = f.Verify(a, "h:1", b.key());
  CHECK(Has(r.problem, "is not signed by --ledger_key " + b.key() + " (the ledger presents key " + a.key() + ")"));
  CHECK(f.Verify(a, "h:1", a.key()).ok);
  auto malformed = VerifyLedger(a, {"h:1", "not-a-key"}, &f.known);
  CHECK(malformed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(malformed.status().message().find("--ledger_key: ") == 0);
}

TEST_CASE("a ledger that cannot be read is an error not a verdict", "[ppnctl][ledger_verify]") {
  Fixture f;
  FakeLedger a("ppn.test/ledger", 'a');
  a.fail_ = absl::UnavailableError("connection refused");
  CHECK(VerifyLedger(a, {"h:1", ""}, &f.known).status().code() == absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace ppn::ppnctl
