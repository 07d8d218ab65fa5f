#pragma once

// spdlog setup shared by every binary: one event per line, "event.name key=value ...".
// No log line can be split or forged by what it quotes: the formatter escapes every control
// character of a message (a newline in a tenant's string becomes the two characters \n).

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ppn {

// Makes the default logger write to stderr (and to `log_file` if non-empty) under `service`'s
// name, with the pattern "%Y-%m-%dT%H:%M:%S.%e %L %n <message, control characters escaped>".
// `level` is one of trace, debug, info, warn, error, off; INVALID_ARGUMENT otherwise.
absl::Status InitLogging(const std::string& service, const std::string& level, const std::string& log_file = "");

// A log value that keeps `key=value` parseable: quoted (with \" and \\) if it is empty or
// contains spaces, quotes, '=' or control characters; control characters escaped as \n, \r,
// \t or \xNN.
std::string LogValue(absl::string_view value);

// `text` with every control character escaped as in LogValue, otherwise unchanged.
std::string EscapeControlCharacters(absl::string_view text);

}  // namespace ppn
