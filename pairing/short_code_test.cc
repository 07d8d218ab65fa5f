#include "pairing/short_code.h"

#include "catch2/catch.hpp"

namespace ppn::pairing {
namespace {

TEST_CASE("short codes round-trip and forgive case dashes and look-alike letters", "[pairing][code]") {
  for (int i = 0; i < 200; ++i) {
    std::string code = *NewShortCode(*OpenSslRandom::Get());
    REQUIRE(code.size() == 11);
    CHECK(code[4] == '-');
    CHECK(code[9] == '-');
    std::string bare = code.substr(0, 4) + code.substr(5, 4) + code.substr(10);
    CHECK(*ParseShortCode(code) == bare);
    std::string sloppy;
    for (char c : bare) sloppy += c == '1' ? 'l' : c == '0' ? 'o' : static_cast<char>(std::tolower(c));
    INFO(code << " typed as " << sloppy);
    CHECK(*ParseShortCode(sloppy) == bare);
  }
}

TEST_CASE("a mistyped short code is refused by its check symbol", "[pairing][code]") {
  std::string code = *NewShortCode(*OpenSslRandom::Get());
  int caught = 0;
  const std::string symbols = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  for (char c : symbols) {
    std::string typo = code;
    if (typo[2] == c) continue;
    typo[2] = c;
    // One changed symbol always changes the value mod 37, so the check catches it.
    if (!ParseShortCode(typo).ok()) ++caught;
  }
  CHECK(caught == 31);
  CHECK(ParseShortCode("ABCD-EFGH").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParseShortCode("ABCD-EFGU-0").status().code() == absl::StatusCode::kInvalidArgument);  // U is not a data symbol
}

}  // namespace
}  // namespace ppn::pairing
