#pragma once

// CPace-X25519-SHA512 (IRTF CFRG draft-irtf-cfrg-cpace-21) on OpenSSL: the PAKE of the
// Genesis pairing ceremony. The generator comes from the password (the operator's short
// code), the channel identifier (binding the joiner's TLS certificate) and the session id,
// through Elligator2 (RFC 9380, Z = 2); shares and the shared point are X25519. Pure C++.
// Byte strings are std::string.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn::pairing {

// prepend_len: LEB128 length, then the bytes (A.1.2).
std::string PrependLen(absl::string_view data);
// lv_cat: prepend_len of each argument, concatenated (A.1.4).
std::string LvCat(const std::vector<std::string>& parts);
// True if `a` sorts after `b` per the draft's lexiographically_larger (A.3.3).
bool LexicographicallyLarger(absl::string_view a, absl::string_view b);
// o_cat: "oc" || the larger of a and b || the other (A.3.5).
std::string OCat(absl::string_view a, absl::string_view b);
// Transcripts for the initiator-responder and the ordered (symmetric) settings.
std::string TranscriptIr(absl::string_view ya, absl::string_view ada, absl::string_view yb, absl::string_view adb);
std::string TranscriptOc(absl::string_view ya, absl::string_view ada, absl::string_view yb, absl::string_view adb);

// generator_string(DSI, PRS, CI, sid, s_in_bytes = 128) (8.1).
std::string GeneratorString(absl::string_view prs, absl::string_view ci, absl::string_view sid);
// The generator g: Elligator2 of the first 32 bytes of SHA-512(generator_string) (8.2).
std::string CalculateGenerator(absl::string_view prs, absl::string_view ci, absl::string_view sid);
// RFC 9380 map_to_curve_elligator2 for curve25519, u-coordinate in and out (32 bytes LE).
std::string Elligator2(absl::string_view field_element);

// X25519(scalar, u) of RFC 7748 (scalar clamped, bit 255 of u cleared). FAILED_PRECONDITION
// when the result is the identity (a low-order point): the protocol must abort.
absl::StatusOr<std::string> ScalarMultVfy(absl::string_view scalar, absl::string_view u);

// ISK = SHA-512(lv_cat(DSI_ISK, sid, K) || transcript) (7.2).
std::string Isk(absl::string_view sid, absl::string_view k, absl::string_view transcript);
// sid_output = SHA-512("CPaceSidOutput" || transcript) (10.6).
std::string SidOutput(absl::string_view transcript);

// One party of an initiator-responder CPace run.
class CPaceParty {
 public:
  // `scalar` is 32 random bytes (sample_scalar).
  CPaceParty(std::string prs, std::string ci, std::string sid, std::string scalar, std::string ad);
  // This party's share Y = X25519(scalar, g).
  absl::StatusOr<std::string> Share() const;
  // The ISK given the peer's share and associated data; `initiator` says which side this is.
  // FAILED_PRECONDITION if the peer's share is low order.
  absl::StatusOr<std::string> Finish(absl::string_view peer_share, absl::string_view peer_ad, bool initiator) const;

 private:
  std::string prs_, ci_, sid_, scalar_, ad_;
};

}  // namespace ppn::pairing
