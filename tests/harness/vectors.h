#pragma once

// Published test vectors from testdata/vectors (//testdata:vectors), used as they are.

#include <string>

#include "nlohmann/json.hpp"

namespace ppn::testing {

// Parses testdata/vectors/<file> from the test's runfiles. Throws if it is missing: a test
// that must use the vectors fails rather than passes without them.
nlohmann::json LoadVectors(const std::string& file);

// Bytes of a lowercase hex string from a vector file (throws on bad hex).
std::string Unhex(const std::string& hex);

}  // namespace ppn::testing
