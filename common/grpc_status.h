#pragma once

// The one crossing between absl::Status (cores, stores) and grpc::Status (adapters).
// The canonical codes have the same numbers in both.

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace ppn {

// Longest message carried across; longer ones are cut so an error never floods a client.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Converts a core's status to the status an RPC returns, truncating the message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Converts a peer's RPC status to an absl::Status, keeping code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace ppn
