#pragma once

// The fingerprint of a create request, kept with its VM so that a retry with the same
// request_id can be told apart from a different request reusing the key. Pure C++.

#include <string>

#include "ppn/types/v1/types.pb.h"

namespace ppn::fleet {

// Hex SHA-256 of `spec`'s deterministic encoding: every field, user_data and labels included
// (labels in key order), so two specs have the same fingerprint exactly when they ask for the
// same VM. Never reveals user_data (a hash of it, with the rest of the spec).
std::string SpecFingerprint(const ppn::types::v1::VmSpec& spec);

}  // namespace ppn::fleet
