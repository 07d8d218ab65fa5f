#include "ledger/signed_note.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <memory>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ppn::ledger {
namespace {

constexpr char kAlgEd25519 = 0x01;
constexpr absl::string_view kSigPrefix = "\xe2\x80\x94 ";  // U+2014 EM DASH, then a space

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};

// A key name is non-empty and contains no '+', whitespace or Unicode spaces.
bool ValidName(absl::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (c == '+' || c <= ' ' || c == 0x7f) return false;
  }
  return true;
}

std::string KeyId(absl::string_view name, absl::string_view public_key) {
  std::string data = absl::StrCat(name, "\n", std::string(1, kAlgEd25519), public_key);
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return std::string(reinterpret_cast<char*>(md), 4);
}

bool DecodeBase64(absl::string_view in, std::string* out) {
  // Standard padded base64 only; absl accepts unpadded input too, so check the shape.
  if (in.empty() || in.size() % 4 != 0) return false;
  return absl::Base64Unescape(in, out);
}

bool ParseHex32(absl::string_view hex, std::string* out) {
  if (hex.size() != 8) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) || absl::ascii_isupper(c)) return false;
  }
  *out = absl::HexStringToBytes(hex);
  return true;
}

}  // namespace

absl::StatusOr<NoteSigner> NoteSigner::FromSeed(const std::string& name, absl::string_view seed) {
  if (!ValidName(name)) return absl::InvalidArgumentError("bad key name");
  if (seed.size() != 32) return absl::InvalidArgumentError("Ed25519 seed must be 32 bytes");
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed.data()), 32));
  if (!key) return absl::InternalError("Ed25519 key setup failed");
  std::string pub(32, '\0');
  size_t len = pub.size();
  EVP_PKEY_get_raw_public_key(key.get(), reinterpret_cast<unsigned char*>(pub.data()), &len);
  NoteSigner signer;
  signer.name_ = name;
  signer.seed_ = std::string(seed);
  signer.public_key_ = pub;
  return signer;
}

absl::StatusOr<NoteSigner> NoteSigner::Parse(absl::string_view private_key) {
  // The base64 key may itself contain '+': split off only the leading fields.
  std::vector<absl::string_view> parts = absl::StrSplit(private_key, absl::MaxSplits('+', 4));
  std::string id, raw;
  if (parts.size() != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" || !ParseHex32(parts[3], &id) ||
      !DecodeBase64(parts[4], &raw) || raw.size() != 33 || raw[0] != kAlgEd25519) {
    return absl::InvalidArgumentError("malformed note signing key");
  }
  absl::StatusOr<NoteSigner> signer = FromSeed(std::string(parts[2]), raw.substr(1));
  if (!signer.ok()) return signer.status();
  if (KeyId(signer->name_, signer->public_key_) != id) {
    return absl::InvalidArgumentError("note signing key id does not match its key");
  }
  return signer;
}

std::string NoteSigner::VerifierKey() const {
  return absl::StrCat(name_, "+", absl::BytesToHexString(KeyId(name_, public_key_)), "+",
                      absl::Base64Escape(std::string(1, kAlgEd25519) + public_key_));
}

std::string NoteSigner::PrivateKeyString() const {
  return absl::StrCat("PRIVATE+KEY+", name_, "+", absl::BytesToHexString(KeyId(name_, public_key_)), "+",
                      absl::Base64Escape(std::string(1, kAlgEd25519) + seed_));
}

absl::StatusOr<std::string> NoteSigner::Sign(absl::string_view text) const {
  if (text.empty() || text.back() != '\n') {
    return absl::InvalidArgumentError("note text must end with a newline");
  }
  std::unique_ptr<EVP_PKEY, PkeyFree> key(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed_.data()), 32));
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  unsigned char sig[64];
  size_t sig_len = sizeof sig;
  if (!key || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig, &sig_len, reinterpret_cast<const unsigned char*>(text.data()), text.size()) != 1) {
    return absl::InternalError("Ed25519 signing failed");
  }
  std::string blob = KeyId(name_, public_key_) + std::string(reinterpret_cast<char*>(sig), sig_len);
  return absl::StrCat(text, "\n", kSigPrefix, name_, " ", absl::Base64Escape(blob), "\n");
}

absl::StatusOr<NoteVerifier> ParseVerifierKey(absl::string_view vkey) {
  std::vector<absl::string_view> parts = absl::StrSplit(vkey, absl::MaxSplits('+', 2));
  NoteVerifier v;
  std::string raw;
  if (parts.size() != 3 || !ValidName(parts[0]) || !ParseHex32(parts[1], &v.key_id) || !DecodeBase64(parts[2], &raw) ||
      raw.size() != 33 || raw[0] != kAlgEd25519) {
    return absl::InvalidArgumentError("malformed note verifier key");
  }
  v.name = std::string(parts[0]);
  v.public_key = raw.substr(1);
  if (KeyId(v.name, v.public_key) != v.key_id) {
    return absl::InvalidArgumentError("verifier key id does not match its key");
  }
  return v;
}

NoteVerdict OpenNote(const NoteVerifier& verifier, absl::string_view signed_note, std::string* text) {
  size_t split = signed_note.rfind("\n\n");
  if (split == absl::string_view::npos) return NoteVerdict::kMalformed;
  absl::string_view body = signed_note.substr(0, split + 1);
  absl::string_view sigs = signed_note.substr(split + 2);
  if (sigs.empty() || sigs.back() != '\n') return NoteVerdict::kMalformed;
  sigs.remove_suffix(1);
  bool verified = false;
  for (absl::string_view line : absl::StrSplit(sigs, '\n')) {
    if (!absl::ConsumePrefix(&line, kSigPrefix)) return NoteVerdict::kMalformed;
    size_t space = line.find(' ');
    if (space == absl::string_view::npos) return NoteVerdict::kMalformed;
    absl::string_view name = line.substr(0, space);
    std::string blob;
    if (!ValidName(name) || !DecodeBase64(line.substr(space + 1), &blob) || blob.size() < 5) {
      return NoteVerdict::kMalformed;
    }
    if (name != verifier.name || blob.substr(0, 4) != verifier.key_id) continue;
    std::unique_ptr<EVP_PKEY, PkeyFree> key(EVP_PKEY_new_raw_public_key(
        EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(verifier.public_key.data()), 32));
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    std::string sig = blob.substr(4);
    bool ok = key && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
              EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                               reinterpret_cast<const unsigned char*>(body.data()), body.size()) == 1;
    if (!ok) return NoteVerdict::kInvalid;
    verified = true;
  }
  if (!verified) return NoteVerdict::kUnverified;
  if (text != nullptr) *text = std::string(body);
  return NoteVerdict::kVerified;
}

std::string MarshalCheckpoint(const Checkpoint& c) {
  return absl::StrCat(c.origin, "\n", c.size, "\n", absl::Base64Escape(c.root_hash), "\n", c.rest);
}

absl::StatusOr<Checkpoint> ParseCheckpoint(absl::string_view text) {
  auto bad = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("malformed checkpoint: ", why));
  };
  Checkpoint c;
  absl::string_view rest = text;
  absl::string_view lines[3];
  for (auto& line : lines) {
    size_t nl = rest.find('\n');
    if (nl == absl::string_view::npos) return bad("fewer than three lines");
    line = rest.substr(0, nl);
    rest.remove_prefix(nl + 1);
  }
  if (lines[0].empty()) return bad("empty origin");
  c.origin = std::string(lines[0]);
  for (char ch : lines[1]) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(ch))) return bad("size is not a number");
  }
  if (lines[1].empty() || !absl::SimpleAtoi(lines[1], &c.size)) return bad("size out of range");
  if (!DecodeBase64(lines[2], &c.root_hash)) return bad("root hash is not base64");
  c.rest = std::string(rest);
  return c;
}

}  // namespace ppn::ledger
