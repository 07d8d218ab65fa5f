#include "ledger/merkle_log.h"

#include <set>
#include <thread>

#include "catch2/catch.hpp"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::ledger {
namespace {

using ppn::ledger::v1::AppendRequest;

const SpiffeId kProxy{"ppn.test", "tenant-proxy", "proxy-1"};
const SpiffeId kFleet{"ppn.test", "fleet", "fleet-1"};

AppendRequest VmCreate(const std::string& vm, const std::string& key = "") {
  AppendRequest r;
  r.set_kind("tenant.vm.create");
  r.set_tenant_id("acme");
  r.set_subject(vm);
  r.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  (*r.mutable_attributes())["image"] = "debian-12";
  r.set_idempotency_key(key);
  return r;
}

struct Fixture {
  ppn::testing::TempDir dir;
  ppn::testing::FakeClock clock;
  std::unique_ptr<LedgerStore> store;
  std::unique_ptr<MerkleLog> log;

  Fixture() { Open(); }
  void Open() {
    log.reset();
    store.reset();
    store = *LedgerStore::Open(dir.File("ledger.db"));
    MerkleLog::Options options;
    options.origin = "ppn.test/ledger";
    log = std::make_unique<MerkleLog>(store.get(), *NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 's')),
                                      &clock, options);
    REQUIRE(log->Start().ok());
  }
};

TEST_CASE("appended entries survive a restart with their hashes and proofs", "[ledger][log]") {
  Fixture f;
  auto a = f.log->Append(kProxy, VmCreate("vm-1"));
  auto b = f.log->Append(kProxy, VmCreate("vm-2"));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->index == 0);
  CHECK(b->index == 1);
  f.Open();
  auto entries = f.log->GetEntries(0, 10, "");
  REQUIRE(entries.ok());
  REQUIRE(entries->size() == 2);
  CHECK((*entries)[1].subject() == "vm-2");
  CHECK((*entries)[1].actor() == "spiffe://ppn.test/tenant-proxy/proxy-1");
  CHECK((*entries)[1].leaf_hash() == b->leaf_hash);
  CHECK((*entries)[1].attributes().at("image") == "debian-12");

  auto checkpoint = f.log->Checkpoint();
  REQUIRE(checkpoint.ok());
  CHECK(checkpoint->tree_size == 2);
  std::string text;
  CHECK(OpenNote(*ParseVerifierKey(checkpoint->verifier_key), checkpoint->note, &text) == NoteVerdict::kVerified);
  auto proof = f.log->ProveInclusion(1, 0);
  REQUIRE(proof.ok());
  CHECK(VerifyInclusion(1, 2, b->leaf_hash, proof->path, checkpoint->root_hash).ok());
}

TEST_CASE("a repeated idempotency key returns the first entry and appends nothing", "[ledger][log]") {
  Fixture f;
  auto first = f.log->Append(kProxy, VmCreate("vm-1", "spool-7"));
  auto again = f.log->Append(kProxy, VmCreate("vm-1", "spool-7"));
  REQUIRE(first.ok());
  REQUIRE(again.ok());
  CHECK(again->duplicate);
  CHECK(again->index == first->index);
  CHECK(f.log->size() == 1);
  SECTION("the key is scoped to the appender") {
    AppendRequest r = VmCreate("vm-1", "spool-7");
    r.set_kind("vm.expired");
    auto other = f.log->Append(kFleet, r);
    REQUIRE(other.ok());
    CHECK_FALSE(other->duplicate);
    CHECK(f.log->size() == 2);
  }
}

TEST_CASE("appends of a kind the role does not own are refused", "[ledger][log][authz]") {
  Fixture f;
  auto denied = f.log->Append(kFleet, VmCreate("vm-1"));
  CHECK(denied.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(denied.status().message() == "role fleet may not append entries of kind tenant.vm.create");
  AppendRequest join;
  join.set_kind("node.join");
  join.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  CHECK(f.log->Append(kProxy, join).status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(f.log->size() == 0);
}

TEST_CASE("malformed appends are refused with the field named", "[ledger][log]") {
  Fixture f;
  AppendRequest r = VmCreate("vm-1");
  SECTION("bad kind") {
    r.set_kind("Tenant VM");
    CHECK(f.log->Append(kProxy, r).status().code() == absl::StatusCode::kInvalidArgument);
  }
  SECTION("no outcome") {
    r.set_outcome(ppn::ledger::v1::OUTCOME_UNSPECIFIED);
    auto s = f.log->Append(kProxy, r).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("outcome") != std::string::npos);
  }
  SECTION("too many attribute bytes") {
    (*r.mutable_attributes())["blob"] = std::string(5000, 'x');
    CHECK(f.log->Append(kProxy, r).status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(f.log->size() == 0);
}

TEST_CASE("concurrent appends get distinct contiguous indexes", "[ledger][log]") {
  Fixture f;
  constexpr int kThreads = 8, kEach = 100;
  std::vector<std::thread> threads;
  std::vector<std::vector<uint64_t>> got(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto r = f.log->Append(kProxy, VmCreate("vm-" + std::to_string(t) + "-" + std::to_string(i)));
        if (r.ok()) got[t].push_back(r->index);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<uint64_t> all;
  for (const auto& v : got) all.insert(v.begin(), v.end());
  CHECK(all.size() == kThreads * kEach);
  CHECK(*all.rbegin() == kThreads * kEach - 1);
  auto c = f.log->Checkpoint();
  REQUIRE(c.ok());
  auto proof = f.log->ProveConsistency(1, c->tree_size);
  REQUIRE(proof.ok());
  CHECK(VerifyConsistency(1, c->tree_size, *RootHash(*f.store, 1), c->root_hash, *proof).ok());
}

TEST_CASE("proofs beyond the log are refused", "[ledger][log]") {
  Fixture f;
  REQUIRE(f.log->Append(kProxy, VmCreate("vm-1")).ok());
  CHECK(f.log->ProveInclusion(1, 0).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.log->ProveInclusion(0, 5).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.log->ProveConsistency(0, 1).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a ledger file refuses a different signing key", "[ledger][log]") {
  Fixture f;
  REQUIRE(f.log->Append(kProxy, VmCreate("vm-1")).ok());
  f.log.reset();
  MerkleLog other(f.store.get(), *NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'x')), &f.clock, {});
  CHECK(other.Start().code() == absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ppn::ledger

namespace ppn::ledger {
namespace {

TEST_CASE("a batch is appended in order, or not at all when one entry is refused", "[ledger][log]") {
  Fixture f;
  std::vector<AppendRequest> batch = {VmCreate("vm-1"), VmCreate("vm-2"), VmCreate("vm-3")};
  auto results = f.log->AppendBatch(kProxy, batch);
  REQUIRE(results.ok());
  REQUIRE(results->size() == 3);
  CHECK((*results)[0].index == 0);
  CHECK((*results)[2].index == 2);
  CHECK((*f.log->GetEntries(0, 10, ""))[1].subject() == "vm-2");

  batch[1].set_kind("Not A Kind");
  auto refused = f.log->AppendBatch(kProxy, batch);
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(refused.status().message()).rfind("entry 1: ", 0) == 0);
  CHECK(f.log->size() == 3);
  CHECK(f.log->AppendBatch(kProxy, {}).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ppn::ledger
