#include "ledger/signed_note.h"

#include "catch2/catch.hpp"
#include "tests/harness/vectors.h"

namespace ppn::ledger {
namespace {

using ppn::testing::LoadVectors;
using ppn::testing::Unhex;

std::vector<nlohmann::json> GroupsOf(const std::string& kind) {
  static const nlohmann::json v = LoadVectors("merkle_rfc6962.json");
  std::vector<nlohmann::json> out;
  for (const auto& g : v["groups"]) {
    if (g["kind"] == kind) out.push_back(g);
  }
  REQUIRE_FALSE(out.empty());
  return out;
}

const char* VerdictName(NoteVerdict v) {
  switch (v) {
    case NoteVerdict::kVerified: return "verified";
    case NoteVerdict::kInvalid: return "invalid";
    case NoteVerdict::kUnverified: return "unverified";
    case NoteVerdict::kMalformed: return "malformed";
  }
  return "?";
}

TEST_CASE("signed notes verify and sign exactly as the published vectors say", "[ledger][note]") {
  for (const auto& g : GroupsOf("signed_note")) {
    for (const auto& v : g["vectors"]) {
      INFO(v["desc"].get<std::string>());
      auto verifier = ParseVerifierKey(v["vkey"].get<std::string>());
      REQUIRE(verifier.ok());
      std::string text;
      CHECK(std::string(VerdictName(OpenNote(*verifier, v["signed"].get<std::string>(), &text))) ==
            v["want"].get<std::string>());
      if (v.contains("skey")) {
        auto signer = NoteSigner::Parse(v["skey"].get<std::string>());
        REQUIRE(signer.ok());
        CHECK(signer->VerifierKey() == v["vkey"].get<std::string>());
        CHECK(*signer->Sign(v["text"].get<std::string>()) == v["signed"].get<std::string>());
        CHECK(signer->PrivateKeyString() == v["skey"].get<std::string>());
      }
    }
  }
}

TEST_CASE("checkpoint bodies marshal and parse as the published vectors say", "[ledger][note]") {
  for (const auto& g : GroupsOf("checkpoint_body")) {
    for (const auto& m : g["marshal"]) {
      Checkpoint c{m["origin"], m["size"], Unhex(m["hash"]), ""};
      CHECK(MarshalCheckpoint(c) == m["text"].get<std::string>());
    }
    for (const auto& u : g["unmarshal"]) {
      INFO(u["desc"].get<std::string>());
      auto c = ParseCheckpoint(u["text"].get<std::string>());
      REQUIRE(c.ok() == !u["wantErr"].get<bool>());
      if (c.ok()) {
        CHECK(c->origin == u["origin"].get<std::string>());
        CHECK(c->size == u["size"].get<uint64_t>());
        CHECK(c->root_hash == Unhex(u["hash"]));
        CHECK(c->rest == u["rest"].get<std::string>());
      }
    }
  }
}

TEST_CASE("the C2SP example checkpoint parses into origin size and root", "[ledger][note]") {
  for (const auto& g : GroupsOf("signed_note_parse")) {
    std::string note = g["note"];
    auto body = ParseCheckpoint(note.substr(0, note.rfind("\n\n") + 1));
    REQUIRE(body.ok());
    CHECK(body->origin == g["origin"].get<std::string>());
    CHECK(body->size == g["size"].get<uint64_t>());
    CHECK(body->root_hash == Unhex(g["root"]));
  }
}

TEST_CASE("a fresh key signs notes its verifier accepts and others reject", "[ledger][note]") {
  auto signer = NoteSigner::FromSeed("ppn.test/ledger", std::string(32, '\x07'));
  REQUIRE(signer.ok());
  auto other = NoteSigner::FromSeed("ppn.test/ledger", std::string(32, '\x08'));
  REQUIRE(other.ok());
  std::string text = MarshalCheckpoint({"ppn.test/ledger", 5, std::string(32, 'r'), ""});
  std::string note = *signer->Sign(text);
  std::string opened;
  CHECK(OpenNote(*ParseVerifierKey(signer->VerifierKey()), note, &opened) == NoteVerdict::kVerified);
  CHECK(opened == text);
  CHECK(OpenNote(*ParseVerifierKey(other->VerifierKey()), note, nullptr) == NoteVerdict::kUnverified);
  std::string tampered = note;
  tampered[tampered.find('5')] = '6';
  CHECK(OpenNote(*ParseVerifierKey(signer->VerifierKey()), tampered, nullptr) == NoteVerdict::kInvalid);
}

}  // namespace
}  // namespace ppn::ledger
