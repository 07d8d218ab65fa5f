// Every edit of a ledger file is caught by the offline verifier.

#include "ledger/verifier.h"

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>

#include "catch2/catch.hpp"
#include "ledger/entry_codec.h"
#include "ledger/merkle_log.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::ledger {
namespace {

constexpr int kEntries = 300;

struct Fixture {
  ppn::testing::TempDir dir;
  std::string path = dir.File("ledger.db");
  std::string vkey;
  std::string first_checkpoint;  // signed at size 100
  std::string last_checkpoint;

  Fixture() {
    ppn::testing::FakeClock clock;
    auto store = *LedgerStore::Open(path);
    MerkleLog::Options options;
    options.origin = "ppn.test/ledger";
    options.checkpoint_interval = absl::InfiniteDuration();
    MerkleLog log(store.get(), *NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'k')), &clock, options);
    REQUIRE(log.Start().ok());
    vkey = log.VerifierKey();
    SpiffeId proxy{"ppn.test", "tenant-proxy", "p"};
    for (int i = 0; i < kEntries; ++i) {
      ppn::ledger::v1::AppendRequest r;
      r.set_kind(i % 2 ? "tenant.vm.create" : "tenant.vm.destroy");
      r.set_tenant_id("acme");
      r.set_subject("vm-" + std::to_string(i));
      r.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
      REQUIRE(log.Append(proxy, r).ok());
      if (i + 1 == 100) first_checkpoint = log.Checkpoint()->note;
      if (i + 1 == 200) REQUIRE(log.Checkpoint().ok());
    }
    log.Stop();
    last_checkpoint = log.Checkpoint()->note;
  }

  // Runs SQL on the file as an attacker would: with the append-only triggers dropped.
  void Tamper(const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    std::string all =
        "DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete;"
        "DROP TRIGGER nodes_no_update; DROP TRIGGER nodes_no_delete;"
        "DROP TRIGGER checkpoints_no_update; DROP TRIGGER checkpoints_no_delete;" +
        sql;
    char* err = nullptr;
    int rc = sqlite3_exec(db, all.c_str(), nullptr, nullptr, &err);
    INFO((err ? err : ""));
    sqlite3_free(err);
    REQUIRE(rc == SQLITE_OK);
    sqlite3_close(db);
  }

  VerifyReport Verify(const std::string& witness = "") {
    VerifyOptions options;
    options.verifier_key = vkey;
    options.witnessed_checkpoint = witness;
    auto report = VerifyLedgerFile(path, options);
    REQUIRE(report.ok());
    return *report;
  }
};

TEST_CASE("an untouched ledger file verifies", "[ledger][verify]") {
  Fixture f;
  VerifyReport r = f.Verify(f.first_checkpoint);
  INFO(r.problem);
  CHECK(r.ok);
  CHECK(r.entries == kEntries);
  CHECK(r.checkpoints >= 3);
  CHECK(r.unanchored_entries == 0);
}

TEST_CASE("the schema refuses UPDATE and DELETE of entries", "[ledger][verify]") {
  Fixture f;
  auto db = *Database::Open(f.path);
  CHECK_FALSE(db->Exec("UPDATE entries SET kind = 'x' WHERE idx = 3").ok());
  CHECK_FALSE(db->Exec("DELETE FROM entries WHERE idx = 3").ok());
  CHECK_FALSE(db->Exec("DELETE FROM checkpoints").ok());
  CHECK_FALSE(db->Exec("UPDATE nodes SET hash = x'00'").ok());
}

TEST_CASE("a changed byte in a leaf is caught at its index", "[ledger][verify]") {
  Fixture f;
  // Flip the last byte of entry 150's leaf (inside the subject "vm-150").
  f.Tamper("UPDATE entries SET leaf = substr(leaf, 1, length(leaf) - 1) || x'39' WHERE idx = 150;");
  VerifyReport r = f.Verify();
  CHECK_FALSE(r.ok);
  INFO(r.problem);
  CHECK(r.first_bad_index == std::optional<uint64_t>(150));
}

TEST_CASE("a deleted entry is caught", "[ledger][verify]") {
  Fixture f;
  f.Tamper("DELETE FROM entries WHERE idx = 42;");
  VerifyReport r = f.Verify();
  CHECK_FALSE(r.ok);
  CHECK(r.first_bad_index == std::optional<uint64_t>(42));
  CHECK(r.problem == "entry 42 is missing");
}

TEST_CASE("reordered entries are caught", "[ledger][verify]") {
  Fixture f;
  f.Tamper(
      "UPDATE entries SET idx = -1 WHERE idx = 10;"
      "UPDATE entries SET idx = 10 WHERE idx = 11;"
      "UPDATE entries SET idx = 11 WHERE idx = -1;");
  VerifyReport r = f.Verify();
  CHECK_FALSE(r.ok);
  INFO(r.problem);
  CHECK(r.first_bad_index == std::optional<uint64_t>(10));
}

TEST_CASE("a rewritten history with recomputed hashes still fails the signed checkpoints", "[ledger][verify]") {
  Fixture f;
  // The attacker rewrites entry 5 and recomputes every stored hash consistently: only the
  // signed checkpoints can tell.
  {
    auto db = *Database::Open(f.path);
    auto read = *db->Prepare("SELECT leaf FROM entries ORDER BY idx");
    std::vector<std::string> leaves;
    while (*read.Step()) leaves.push_back(read.ColumnBlob(0));
    auto entry = *DecodeLeaf(leaves[5]);
    entry.set_subject("vm-forged");
    leaves[5] = EncodeLeaf(entry);
    MemoryTree tree;
    std::string sql = "DELETE FROM nodes; UPDATE entries SET leaf = x'" + ToHex(leaves[5]) + "' WHERE idx = 5;";
    for (const auto& leaf : leaves) tree.AppendLeaf(leaf);
    for (int level = 0; level < 10; ++level) {
      for (uint64_t i = 0;; ++i) {
        auto h = tree.PerfectSubtree(level, i);
        if (!h.ok()) break;
        sql += "INSERT INTO nodes VALUES (" + std::to_string(level) + ", " + std::to_string(i) + ", x'" + ToHex(*h) +
               "');";
      }
    }
    f.Tamper(sql);
  }
  VerifyReport r = f.Verify();
  CHECK_FALSE(r.ok);
  CHECK(r.problem == "entries [0, 100) do not match the signed checkpoint at size 100");
}

TEST_CASE("truncated entries are caught", "[ledger][verify]") {
  Fixture f;
  SECTION("rows removed at the end") {
    f.Tamper("DELETE FROM entries WHERE idx >= 250; DELETE FROM nodes WHERE (idx << level) >= 250;");
    VerifyReport r = f.Verify();
    CHECK_FALSE(r.ok);
    CHECK(r.problem.find("truncated") != std::string::npos);
  }
  SECTION("rows and the later checkpoints removed: caught by a witnessed checkpoint") {
    f.Tamper(
        "DELETE FROM entries WHERE idx >= 50; DELETE FROM nodes WHERE (idx << level) >= 50;"
        "DELETE FROM checkpoints WHERE tree_size > 50;");
    VerifyReport r = f.Verify(f.first_checkpoint);
    CHECK_FALSE(r.ok);
    CHECK(r.problem.find("truncated") != std::string::npos);
  }
  SECTION("the file itself cut short") {
    std::filesystem::resize_file(f.path, std::filesystem::file_size(f.path) / 2);
    VerifyOptions options;
    options.verifier_key = f.vkey;
    auto r = VerifyLedgerFile(f.path, options);
    CHECK((!r.ok() || !r->ok));
  }
}

TEST_CASE("a stored subtree hash that does not match the leaves is caught", "[ledger][verify]") {
  Fixture f;
  f.Tamper("UPDATE nodes SET hash = zeroblob(32) WHERE level = 3 AND idx = 4;");
  VerifyReport r = f.Verify();
  CHECK_FALSE(r.ok);
  CHECK(r.first_bad_index == std::optional<uint64_t>(32));
}

TEST_CASE("checkpoints signed by another key are refused", "[ledger][verify]") {
  Fixture f;
  f.vkey = NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'z'))->VerifierKey();
  VerifyReport r = f.Verify();
  CHECK_FALSE(r.ok);
  CHECK(r.problem.find("signature does not verify") != std::string::npos);
}

}  // namespace
}  // namespace ppn::ledger
