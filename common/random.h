#pragma once

// RandomSource is where PPN code gets unpredictable bytes (keys, ids, codes).

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ppn {

// RandomSource fills buffers with random bytes. Implementations are thread-safe.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  // Fills `out[0..len)`; INTERNAL if the generator fails.
  virtual absl::Status Fill(uint8_t* out, size_t len) = 0;
};

// OpenSslRandom draws from OpenSSL's RAND_bytes (the system CSPRNG).
class OpenSslRandom final : public RandomSource {
 public:
  absl::Status Fill(uint8_t* out, size_t len) override;
  static RandomSource* Get();
};

// Returns `len` random bytes from `random` as lowercase hex (2*len characters).
absl::StatusOr<std::string> RandomHex(RandomSource& random, size_t len);

}  // namespace ppn
