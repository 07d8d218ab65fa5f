#include "common/sqlite.h"

#include <fstream>

#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn {
namespace {

const std::vector<std::string> kSchema = {
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)",
    "ALTER TABLE kv ADD COLUMN n INTEGER NOT NULL DEFAULT 0",
};

TEST_CASE("sqlite migrates the schema once and keeps committed rows across reopen", "[common][sqlite]") {
  ppn::testing::TempDir dir;
  std::string path = dir.File("t.db");
  {
    auto db = Database::Open(path);
    REQUIRE(db.ok());
    REQUIRE((*db)->Migrate(kSchema).ok());
    CHECK(*(*db)->SchemaVersion() == 2);
    auto insert = (*db)->Prepare("INSERT INTO kv (k, v, n) VALUES (?, ?, ?)");
    REQUIRE(insert.ok());
    REQUIRE(insert->Bind(1, "a").BindBlob(2, std::string("\0\1", 2)).Bind(3, 7).Run().ok());
    insert->Reset();
    REQUIRE(insert->Bind(1, "empty").BindBlob(2, "").Bind(3, 0).Run().ok());

    SECTION("a rolled-back transaction leaves nothing") {
      Transaction tx(**db);
      REQUIRE(tx.Begin().ok());
      REQUIRE((*db)->Exec("INSERT INTO kv (k, v) VALUES ('gone', x'00')").ok());
    }
  }
  auto db = Database::Open(path);
  REQUIRE(db.ok());
  REQUIRE((*db)->Migrate(kSchema).ok());  // already current: a no-op
  auto select = (*db)->Prepare("SELECT k, v, n FROM kv ORDER BY k");
  REQUIRE(select.ok());
  REQUIRE(*select->Step());
  CHECK(select->ColumnText(0) == "a");
  CHECK(select->ColumnBlob(1) == std::string("\0\1", 2));
  CHECK(select->ColumnInt(2) == 7);
  REQUIRE(*select->Step());
  CHECK(select->ColumnText(0) == "empty");
  CHECK_FALSE(select->ColumnIsNull(1));
  CHECK_FALSE(*select->Step());
}

TEST_CASE("sqlite errors carry the right code and name the statement", "[common][sqlite]") {
  ppn::testing::TempDir dir;
  auto db = Database::Open(dir.File("t.db"));
  REQUIRE(db.ok());
  REQUIRE((*db)->Migrate(kSchema).ok());
  REQUIRE((*db)->Exec("INSERT INTO kv (k, v) VALUES ('a', x'00')").ok());

  absl::Status dup = (*db)->Exec("INSERT INTO kv (k, v) VALUES ('a', x'00')");
  CHECK(dup.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(dup.message()).find("INSERT INTO kv") != std::string::npos);

  auto bad = (*db)->Prepare("SELEC nonsense");
  CHECK(bad.status().code() == absl::StatusCode::kInternal);

  SECTION("a database written by a newer schema is refused") {
    REQUIRE((*db)->Exec("PRAGMA user_version=9").ok());
    absl::Status newer = (*db)->Migrate(kSchema);
    CHECK(newer.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(std::string(newer.message()).find("newer version") != std::string::npos);
  }
}

TEST_CASE("a file that is not a database is refused as data loss", "[common][sqlite]") {
  ppn::testing::TempDir dir;
  std::ofstream(dir.File("junk.db")) << std::string(4096, 'j');
  auto db = Database::Open(dir.File("junk.db"));
  REQUIRE_FALSE(db.ok());
  CHECK(db.status().code() == absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace ppn
