#include "pairing/cpace.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"

namespace ppn::pairing {
namespace {

constexpr char kDsi[] = "CPace255";
constexpr char kDsiIsk[] = "CPace255_ISK";
constexpr size_t kHashBlockBytes = 128;  // SHA-512's s_in_bytes

std::string Sha512(absl::string_view data) {
  unsigned char md[SHA512_DIGEST_LENGTH];
  SHA512(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;
struct CtxFree {
  void operator()(BN_CTX* c) const { BN_CTX_free(c); }
};

Bn FromLe(absl::string_view le) {
  std::string be(le.rbegin(), le.rend());
  return Bn(BN_bin2bn(reinterpret_cast<const unsigned char*>(be.data()), static_cast<int>(be.size()), nullptr));
}

std::string ToLe32(const BIGNUM* b) {
  unsigned char out[32];
  BN_bn2lebinpad(b, out, sizeof out);
  return std::string(reinterpret_cast<char*>(out), sizeof out);
}

}  // namespace

std::string PrependLen(absl::string_view data) {
  std::string out;
  size_t len = data.size();
  do {
    unsigned char byte = len & 0x7f;
    len >>= 7;
    if (len != 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (len != 0);
  out.append(data.data(), data.size());
  return out;
}

std::string LvCat(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += PrependLen(p);
  return out;
}

bool LexicographicallyLarger(absl::string_view a, absl::string_view b) {
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = a[i], y = b[i];
    if (x > y) return true;
    if (x < y) return false;
  }
  return a.size() > b.size();
}

std::string OCat(absl::string_view a, absl::string_view b) {
  return LexicographicallyLarger(a, b) ? absl::StrCat("oc", a, b) : absl::StrCat("oc", b, a);
}

std::string TranscriptIr(absl::string_view ya, absl::string_view ada, absl::string_view yb, absl::string_view adb) {
  return LvCat({std::string(ya), std::string(ada)}) + LvCat({std::string(yb), std::string(adb)});
}

std::string TranscriptOc(absl::string_view ya, absl::string_view ada, absl::string_view yb, absl::string_view adb) {
  return OCat(LvCat({std::string(ya), std::string(ada)}), LvCat({std::string(yb), std::string(adb)}));
}

std::string GeneratorString(absl::string_view prs, absl::string_view ci, absl::string_view sid) {
  std::string dsi = kDsi;
  size_t used = 1 + PrependLen(prs).size() + PrependLen(dsi).size();
  size_t zpad = used < kHashBlockBytes ? kHashBlockBytes - used : 0;
  return LvCat({dsi, std::string(prs), std::string(zpad, '\0'), std::string(ci), std::string(sid)});
}

std::string Elligator2(absl::string_view field_element) {
  std::unique_ptr<BN_CTX, CtxFree> ctx(BN_CTX_new());
  Bn p(BN_new()), a(BN_new()), z(BN_new()), one(BN_new());
  BN_set_word(p.get(), 1);
  BN_lshift(p.get(), p.get(), 255);
  BN_sub_word(p.get(), 19);
  BN_set_word(a.get(), 486662);
  BN_set_word(z.get(), 2);
  BN_one(one.get());
  Bn u = FromLe(field_element);
  BN_nnmod(u.get(), u.get(), p.get(), ctx.get());
  // x1 = -A / (1 + Z u^2); where the denominator is 0, x1 = -A (RFC 9380 exceptional case).
  Bn tv(BN_new()), den(BN_new()), x1(BN_new()), neg_a(BN_new());
  BN_mod_sqr(tv.get(), u.get(), p.get(), ctx.get());
  BN_mod_mul(tv.get(), tv.get(), z.get(), p.get(), ctx.get());
  BN_mod_add(den.get(), tv.get(), one.get(), p.get(), ctx.get());
  BN_mod_sub(neg_a.get(), p.get(), a.get(), p.get(), ctx.get());
  if (BN_is_zero(den.get())) {
    BN_copy(x1.get(), neg_a.get());
  } else {
    Bn inv(BN_mod_inverse(nullptr, den.get(), p.get(), ctx.get()));
    BN_mod_mul(x1.get(), neg_a.get(), inv.get(), p.get(), ctx.get());
  }
  // gx1 = x1^3 + A x1^2 + x1; keep x1 if gx1 is a square, else x2 = -x1 - A.
  Bn x2(BN_new()), gx(BN_new()), t(BN_new()), e(BN_new()), leg(BN_new());
  BN_mod_sqr(t.get(), x1.get(), p.get(), ctx.get());
  BN_mod_mul(gx.get(), t.get(), x1.get(), p.get(), ctx.get());
  BN_mod_mul(t.get(), t.get(), a.get(), p.get(), ctx.get());
  BN_mod_add(gx.get(), gx.get(), t.get(), p.get(), ctx.get());
  BN_mod_add(gx.get(), gx.get(), x1.get(), p.get(), ctx.get());
  BN_copy(e.get(), p.get());
  BN_sub_word(e.get(), 1);
  BN_rshift1(e.get(), e.get());
  BN_mod_exp(leg.get(), gx.get(), e.get(), p.get(), ctx.get());
  bool square = BN_is_zero(leg.get()) || BN_is_one(leg.get());
  if (square) return ToLe32(x1.get());
  BN_mod_sub(x2.get(), neg_a.get(), x1.get(), p.get(), ctx.get());
  return ToLe32(x2.get());
}

std::string CalculateGenerator(absl::string_view prs, absl::string_view ci, absl::string_view sid) {
  std::string h = Sha512(GeneratorString(prs, ci, sid)).substr(0, 32);
  h[31] = static_cast<char>(static_cast<unsigned char>(h[31]) & 0x7f);  // decodeUCoordinate
  return Elligator2(h);
}

absl::StatusOr<std::string> ScalarMultVfy(absl::string_view scalar, absl::string_view u) {
  if (scalar.size() != 32 || u.size() != 32) return absl::InvalidArgumentError("X25519 takes 32-byte inputs");
  EVP_PKEY* priv =
      EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, reinterpret_cast<const unsigned char*>(scalar.data()), 32);
  EVP_PKEY* peer =
      EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, reinterpret_cast<const unsigned char*>(u.data()), 32);
  EVP_PKEY_CTX* ctx = priv != nullptr ? EVP_PKEY_CTX_new(priv, nullptr) : nullptr;
  unsigned char out[32];
  size_t len = sizeof out;
  // OpenSSL refuses an all-zero result: exactly the identity check CPace requires.
  bool ok = ctx != nullptr && peer != nullptr && EVP_PKEY_derive_init(ctx) == 1 &&
            EVP_PKEY_derive_set_peer(ctx, peer) == 1 && EVP_PKEY_derive(ctx, out, &len) == 1;
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(peer);
  EVP_PKEY_free(priv);
  if (!ok) return absl::FailedPreconditionError("CPace aborted: the peer's share is a low-order point");
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string Isk(absl::string_view sid, absl::string_view k, absl::string_view transcript) {
  return Sha512(absl::StrCat(LvCat({kDsiIsk, std::string(sid), std::string(k)}), transcript));
}

std::string SidOutput(absl::string_view transcript) { return Sha512(absl::StrCat("CPaceSidOutput", transcript)); }

CPaceParty::CPaceParty(std::string prs, std::string ci, std::string sid, std::string scalar, std::string ad)
    : prs_(std::move(prs)), ci_(std::move(ci)), sid_(std::move(sid)), scalar_(std::move(scalar)), ad_(std::move(ad)) {}

absl::StatusOr<std::string> CPaceParty::Share() const {
  return ScalarMultVfy(scalar_, CalculateGenerator(prs_, ci_, sid_));
}

absl::StatusOr<std::string> CPaceParty::Finish(absl::string_view peer_share, absl::string_view peer_ad,
                                               bool initiator) const {
  absl::StatusOr<std::string> mine = Share();
  if (!mine.ok()) return mine.status();
  absl::StatusOr<std::string> k = ScalarMultVfy(scalar_, peer_share);
  if (!k.ok()) return k.status();
  std::string transcript =
      initiator ? TranscriptIr(*mine, ad_, peer_share, peer_ad) : TranscriptIr(peer_share, peer_ad, *mine, ad_);
  return Isk(sid_, *k, transcript);
}

}  // namespace ppn::pairing
