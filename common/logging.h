#pragma once

// spdlog setup shared by every binary: one event per line, "event.name key=value ...".

#include <string>

#include "absl/status/status.h"

namespace ppn {

// Makes the default logger write to stderr (and to `log_file` if non-empty) under `service`'s
// name, with the pattern "%Y-%m-%dT%H:%M:%S.%e %L %n %v". `level` is one of trace, debug,
// info, warn, error, off; INVALID_ARGUMENT otherwise.
absl::Status InitLogging(const std::string& service, const std::string& level,
                         const std::string& log_file = "");

// Quotes a log value if it contains spaces, quotes or '=' (key=value stays parseable).
std::string LogValue(const std::string& value);

}  // namespace ppn
