#pragma once

// Whole-file reads and durable writes: the one place the code base reads a file into memory
// or replaces one. Pure C++ (POSIX underneath); every error names the path.

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ppn {

// The whole content of `path`. NOT_FOUND if it does not exist, PERMISSION_DENIED if it may
// not be read, INTERNAL for any other read error; each names the path.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// The last `max_bytes` of `path` without trailing newlines, or "" when it cannot be read:
// for error messages that quote a log (QEMU's own complaint).
std::string ReadFileTail(const std::string& path, size_t max_bytes = 400);

// Replaces `path` with `data` so that a reader or a crash sees the old content or the new,
// never a mix: writes a temporary file beside it with `mode`, fsyncs it, renames it over
// `path` and fsyncs the directory. PERMISSION_DENIED or INTERNAL naming the path.
absl::Status WriteFileAtomically(const std::string& path, const std::string& data, mode_t mode = 0644);

}  // namespace ppn
