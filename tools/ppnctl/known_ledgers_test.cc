#include "tools/ppnctl/known_ledgers.h"

#include <sys/stat.h>

#include <fstream>

#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn::ppnctl {
namespace {

KnownLedger Ledger(const std::string& origin, uint64_t size) {
  return KnownLedger{origin, origin + "+01020304+AXXX", size, std::string(32, static_cast<char>(size)), {"h:1"}};
}

TEST_CASE("known ledgers survive a save and a load", "[ppnctl][known_ledgers]") {
  ppn::testing::TempDir dir;
  std::string path = dir.File("config/ppnctl/known_ledgers");
  auto known = KnownLedgers::Load(path);
  REQUIRE(known.ok());
  CHECK(known->Find("a/ledger") == nullptr);
  REQUIRE(known->Put(Ledger("a/ledger", 3)).ok());
  KnownLedger b = Ledger("b/ledger", 0);
  b.root_hash.clear();
  b.endpoints = {"h:2", "h:3"};
  REQUIRE(known->Put(b).ok());
  REQUIRE(known->Save().ok());
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(stat(dir.File("config").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);

  auto again = KnownLedgers::Load(path);
  REQUIRE(again.ok());
  const KnownLedger* a = again->Find("a/ledger");
  REQUIRE(a != nullptr);
  CHECK(a->verifier_key == "a/ledger+01020304+AXXX");
  CHECK(a->tree_size == 3);
  CHECK(a->root_hash == std::string(32, '\3'));
  CHECK(again->FindByEndpoint("h:3")->origin == "b/ledger");
  CHECK(again->FindByEndpoint("h:9") == nullptr);
  CHECK(again->Format() == known->Format());
  CHECK(again->Format().find("a/ledger a/ledger+01020304+AXXX 3 0303") != std::string::npos);
}

TEST_CASE("putting a known ledger replaces its line", "[ppnctl][known_ledgers]") {
  ppn::testing::TempDir dir;
  auto known = *KnownLedgers::Load(dir.File("k"));
  REQUIRE(known.Put(Ledger("a/ledger", 3)).ok());
  REQUIRE(known.Put(Ledger("a/ledger", 7)).ok());
  CHECK(known.Find("a/ledger")->tree_size == 7);
  CHECK(known.Put(Ledger("a ledger", 1)).code() == absl::StatusCode::kInvalidArgument);
  KnownLedger comma = Ledger("c/ledger", 1);
  comma.endpoints = {"h:1,h:2"};
  CHECK_FALSE(known.Put(comma).ok());
}

TEST_CASE("a line that is not ours is refused with its place", "[ppnctl][known_ledgers]") {
  ppn::testing::TempDir dir;
  std::string path = dir.File("k");
  std::ofstream(path) << "# comment\n\na/ledger key 3 zz h:1\n";
  CHECK(KnownLedgers::Load(path).status().message() ==
        path + ":3: want \"<origin> <verifier key> <tree size> <root hash hex> <endpoints>\"");
  std::ofstream(path) << "a/ledger key 3\n";
  CHECK(KnownLedgers::Load(path).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ppn::ppnctl
