#pragma once

// The ceremony's keys after CPace: key confirmation tags and the AEAD channel (AES-256-GCM)
// that carries the enrollment. Everything derives from the ISK; nothing here is secret-free
// to log. Pure C++ on OpenSSL.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn::pairing {

// CPace's channel identifier: binds the joiner's TLS certificate fingerprint, so a relay
// with its own certificate derives a different generator and cannot confirm the key.
std::string ChannelIdentifier(absl::string_view tls_fingerprint);

// Key confirmation (draft section 10.4 style): Ta = HMAC-SHA512(SHA-512("PPN-KC-A"||ISK), transcript).
std::string ConfirmationTag(absl::string_view isk, bool initiator, absl::string_view transcript);
// Constant-time equality for tags.
bool TagsEqual(absl::string_view a, absl::string_view b);

// AES-256-GCM under SHA-512("PPN-ENROLL"||ISK)[0:32]; the nonce is a direction byte and a
// message counter, so no nonce repeats within a ceremony.
struct SealedBox {
  std::string nonce;
  std::string ciphertext;
};
absl::StatusOr<SealedBox> Seal(absl::string_view isk, bool from_initiator, uint32_t counter,
                               absl::string_view plaintext);
// PERMISSION_DENIED if the box does not authenticate.
absl::StatusOr<std::string> Open(absl::string_view isk, const SealedBox& box);

}  // namespace ppn::pairing
