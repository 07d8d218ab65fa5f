#include "common/random.h"

#include <openssl/rand.h>

#include <vector>

#include "absl/strings/escaping.h"

namespace ppn {

absl::Status OpenSslRandom::Fill(uint8_t* out, size_t len) {
  if (RAND_bytes(out, static_cast<int>(len)) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  return absl::OkStatus();
}

RandomSource* OpenSslRandom::Get() {
  static OpenSslRandom random;
  return &random;
}

absl::StatusOr<std::string> RandomHex(RandomSource& random, size_t len) {
  std::vector<uint8_t> buf(len);
  absl::Status status = random.Fill(buf.data(), buf.size());
  if (!status.ok()) return status;
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(buf.data()), buf.size()));
}

}  // namespace ppn
