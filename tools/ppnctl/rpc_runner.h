#pragma once

// Runs one RPC for a verb or for the generated "SERVICE RPC": builds the request from the
// command line, checks everything that can be checked locally (flags, values, output format,
// timeout, credentials), and only then calls, printing each response.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "tools/ppnctl/api.h"
#include "tools/ppnctl/verb.h"

namespace ppn::ppnctl {

// The request of `invocation.command`: the verb's defaults that no flag overrides, its
// positional arguments, then the flags in order (a verb's aliases renamed and their values
// converted, --json merged).
// INVALID_ARGUMENT naming an unknown flag and the nearest known one, or a bad value.
absl::StatusOr<std::unique_ptr<google::protobuf::Message>> BuildRequest(const Invocation& invocation, const Api& api);

// Runs it. Exit code 0 on success, 1 when the call failed (explained on stderr), 2 for a
// mistake on the command line (nothing was called).
int RunRpc(const Invocation& invocation);

// Exit codes.
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;  // Ctrl-C cancelled the call, as a shell reports it

// Prints `status` explained (Explain) to stderr; returns kExitFailed.
int Fail(const absl::Status& status);
// Prints a command-line mistake to stderr; returns kExitUsage.
int UsageError(const absl::Status& status);

}  // namespace ppn::ppnctl
