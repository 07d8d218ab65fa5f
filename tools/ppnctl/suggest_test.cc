#include "tools/ppnctl/suggest.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

TEST_CASE("a typo is matched to the nearest known name", "[ppnctl][suggest]") {
  std::vector<std::string> verbs = {"create", "list", "get", "destroy"};
  CHECK(Nearest("creat", verbs) == "create");
  CHECK(Nearest("destory", verbs) == "destroy");
  CHECK(Nearest("lsit", verbs) == "list");
  CHECK(DidYouMean("gte", verbs, "vm ") == " (did you mean \"vm get\"?)");
}

TEST_CASE("an unfinished name is matched to the shortest name it begins", "[ppnctl][suggest]") {
  CHECK(Nearest("spec.memory", {"spec.memory_mib", "spec.memory_mib_max", "spec.image"}) == "spec.memory_mib");
}

TEST_CASE("nothing is suggested when no name is close", "[ppnctl][suggest]") {
  CHECK(Nearest("fly", {"append", "get-entries", "verify"}).empty());
  CHECK(DidYouMean("zzzzzz", {"create"}).empty());
  CHECK(Nearest("", {"create"}).empty());
  CHECK(Nearest("x", {}).empty());
}

}  // namespace
}  // namespace ppn::ppnctl
