#include "pairing/cpace.h"

#include <openssl/rand.h>

#include "catch2/catch.hpp"
#include "tests/harness/vectors.h"

namespace ppn::pairing {
namespace {

using ppn::testing::Unhex;

const nlohmann::json& V() {
  static const nlohmann::json v = ppn::testing::LoadVectors("cpace_x25519_sha512.json");
  return v;
}

TEST_CASE("CPace string utilities match the published vectors", "[pairing][cpace]") {
  const auto& u = V()["string_utils"];
  for (const auto& c : u["prepend_len"]) CHECK(PrependLen(Unhex(c["input"])) == Unhex(c["output"]));
  for (const auto& c : u["lv_cat"]) {
    std::vector<std::string> parts;
    for (const auto& p : c["inputs"]) parts.push_back(Unhex(p));
    CHECK(LvCat(parts) == Unhex(c["output"]));
  }
  for (const auto& c : u["lexiographically_larger"]) {
    INFO(c["label"].get<std::string>());
    CHECK(LexicographicallyLarger(Unhex(c["a"]), Unhex(c["b"])) == c["result"].get<bool>());
  }
  for (const auto& c : u["o_cat"]) CHECK(OCat(Unhex(c["a"]), Unhex(c["b"])) == Unhex(c["output"]));
  for (const auto& c : u["transcript_ir"]) {
    CHECK(TranscriptIr(Unhex(c["Ya"]), Unhex(c["ADa"]), Unhex(c["Yb"]), Unhex(c["ADb"])) == Unhex(c["output"]));
  }
  for (const auto& c : u["transcript_oc"]) {
    CHECK(TranscriptOc(Unhex(c["Ya"]), Unhex(c["ADa"]), Unhex(c["Yb"]), Unhex(c["ADb"])) == Unhex(c["output"]));
  }
}

TEST_CASE("the CPace generator matches the published vector", "[pairing][cpace]") {
  const auto& g = V()["calculate_generator"];
  CHECK(GeneratorString(Unhex(g["PRS"]), Unhex(g["CI"]), Unhex(g["sid"])) == Unhex(g["generator_string"]));
  CHECK(Elligator2(Unhex(g["decoded_field_element"])) == Unhex(g["g"]));
  CHECK(CalculateGenerator(Unhex(g["PRS"]), Unhex(g["CI"]), Unhex(g["sid"])) == Unhex(g["g"]));
}

TEST_CASE("a CPace run reproduces the published shares K ISKs and sid outputs", "[pairing][cpace]") {
  const auto& p = V()["protocol"];
  std::string ya = Unhex(p["ya"]), yb = Unhex(p["yb"]), g = Unhex(p["g"]);
  CHECK(*ScalarMultVfy(ya, g) == Unhex(p["Ya"]));
  CHECK(*ScalarMultVfy(yb, g) == Unhex(p["Yb"]));
  CHECK(*ScalarMultVfy(ya, Unhex(p["Yb"])) == Unhex(p["K"]));
  CHECK(*ScalarMultVfy(yb, Unhex(p["Ya"])) == Unhex(p["K"]));
  std::string tir = TranscriptIr(Unhex(p["Ya"]), Unhex(p["ADa"]), Unhex(p["Yb"]), Unhex(p["ADb"]));
  CHECK(tir == Unhex(p["transcript_ir"]));
  CHECK(Isk(Unhex(p["sid"]), Unhex(p["K"]), tir) == Unhex(p["ISK_IR"]));
  std::string toc = TranscriptOc(Unhex(p["Ya"]), Unhex(p["ADa"]), Unhex(p["Yb"]), Unhex(p["ADb"]));
  CHECK(toc == Unhex(p["transcript_oc"]));
  CHECK(Isk(Unhex(p["sid"]), Unhex(p["K"]), toc) == Unhex(p["ISK_SY"]));
  CHECK(SidOutput(tir) == Unhex(p["sid_output_ir"]));
  CHECK(SidOutput(toc) == Unhex(p["sid_output_oc"]));

  CPaceParty a(Unhex(p["PRS"]), Unhex(p["CI"]), Unhex(p["sid"]), ya, Unhex(p["ADa"]));
  CPaceParty b(Unhex(p["PRS"]), Unhex(p["CI"]), Unhex(p["sid"]), yb, Unhex(p["ADb"]));
  CHECK(*a.Finish(*b.Share(), Unhex(p["ADb"]), true) == Unhex(p["ISK_IR"]));
  CHECK(*b.Finish(*a.Share(), Unhex(p["ADa"]), false) == Unhex(p["ISK_IR"]));
}

TEST_CASE("low-order shares abort exactly where the vectors say", "[pairing][cpace]") {
  const auto& lo = V()["scalar_mult_vfy_low_order"];
  for (const auto& c : lo["cases"]) {
    INFO(c["name"].get<std::string>());
    auto q = ScalarMultVfy(Unhex(lo["s"]), Unhex(c["u"]));
    CHECK(!q.ok() == c["abort"].get<bool>());
    if (q.ok()) CHECK(*q == Unhex(c["q"]));
  }
}

TEST_CASE("random CPace runs agree only when password and channel agree", "[pairing][cpace]") {
  auto rnd = [](size_t n) {
    std::string s(n, '\0');
    RAND_bytes(reinterpret_cast<unsigned char*>(s.data()), static_cast<int>(n));
    return s;
  };
  for (int i = 0; i < 20; ++i) {
    std::string sid = rnd(16), ci = rnd(32), code = rnd(8);
    CPaceParty a(code, ci, sid, rnd(32), "admin");
    CPaceParty b(code, ci, sid, rnd(32), "laptop-c");
    CHECK(*a.Finish(*b.Share(), "laptop-c", true) == *b.Finish(*a.Share(), "admin", false));
    CPaceParty wrong_code(rnd(8), ci, sid, rnd(32), "laptop-c");
    CHECK(*a.Finish(*wrong_code.Share(), "laptop-c", true) != *wrong_code.Finish(*a.Share(), "admin", false));
    CPaceParty relayed(code, rnd(32), sid, rnd(32), "laptop-c");  // another TLS certificate in CI
    CHECK(*a.Finish(*relayed.Share(), "laptop-c", true) != *relayed.Finish(*a.Share(), "admin", false));
  }
}

}  // namespace
}  // namespace ppn::pairing
