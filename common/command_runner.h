#pragma once

// CommandRunner runs a tool to completion (ip, nft, wg, qemu-img ...), in the node's network
// namespace or in a named one, and returns its output. The host agent's ProcessSpawner
// provides the implementation; units that configure the node take one so tests can inject
// their own.

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ppn {

// Runs argv to completion, in the node's network namespace or, when `netns` is non-empty, in
// that named namespace (/run/netns/<netns>). Returns its output; an error carrying the output
// when it exits non-zero.
using CommandRunner =
    std::function<absl::StatusOr<std::string>(const std::vector<std::string>& argv, const std::string& netns)>;

}  // namespace ppn
