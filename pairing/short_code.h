#pragma once

// The operator's short code: 8 Crockford base32 symbols (40 random bits) and Crockford's
// check symbol (the value mod 37), shown as "XXXX-XXXX-C". Input is case-insensitive, ignores
// dashes and spaces, and reads I and L as 1, O as 0. Pure C++.

#include <string>

#include "absl/status/statusor.h"
#include "common/random.h"

namespace ppn::pairing {

// A fresh code, formatted.
absl::StatusOr<std::string> NewShortCode(RandomSource& random);

// The canonical 9 symbols of a typed code. INVALID_ARGUMENT for a wrong length, a symbol
// outside the alphabet, or a check symbol that does not match (a typo caught before any
// attempt is spent).
absl::StatusOr<std::string> ParseShortCode(const std::string& typed);

}  // namespace ppn::pairing
