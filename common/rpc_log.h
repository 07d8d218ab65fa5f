#pragma once

// The one log line of a failed RPC, written once at the adapter that answers it:
//   rpc.failed rpc=CreateVm code=NOT_FOUND tenant=acme error="vm vm-1 not found"
// Refusals of a caller's request (bad input, not found, quota) log at info; failures of the
// control plane itself (INTERNAL, UNAVAILABLE, DATA_LOSS, UNKNOWN, DEADLINE_EXCEEDED) at warn.
// Values are escaped (common/logging.h). Callers pass ids only, never a secret.

#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace ppn {

struct LogField {
  absl::string_view key;
  absl::string_view value;
};

// Logs `status` for `rpc` with `ids` and returns it as the RPC's status (ToGrpcStatus).
grpc::Status RpcFailed(absl::string_view rpc, const absl::Status& status, std::initializer_list<LogField> ids = {});

}  // namespace ppn
