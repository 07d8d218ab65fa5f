#include "tests/harness/vectors.h"

#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include "absl/strings/escaping.h"

namespace ppn::testing {

nlohmann::json LoadVectors(const std::string& file) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  std::string base = srcdir != nullptr ? srcdir : ".";
  for (const std::string& dir : {base + "/ppn/testdata/vectors/", base + "/testdata/vectors/"}) {
    std::ifstream in(dir + file);
    if (in) return nlohmann::json::parse(in);
  }
  throw std::runtime_error("test vectors " + file + " not found under " + base);
}

std::string Unhex(const std::string& hex) {
  if (hex.size() % 2 != 0) throw std::runtime_error("odd hex in vector: " + hex);
  return absl::HexStringToBytes(hex);
}

}  // namespace ppn::testing
