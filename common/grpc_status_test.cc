#include "common/grpc_status.h"

#include <string>

#include "catch2/catch.hpp"

namespace ppn {
namespace {

TEST_CASE("status codes cross between absl and gRPC unchanged", "[common][status]") {
  CHECK(ToGrpcStatus(absl::OkStatus()).ok());
  grpc::Status g = ToGrpcStatus(absl::NotFoundError("vm v1 not found"));
  CHECK(g.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(g.error_message() == "vm v1 not found");
  absl::Status a = FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "quota"));
  CHECK(a.code() == absl::StatusCode::kResourceExhausted);
  CHECK(a.message() == "quota");
}

TEST_CASE("long status messages are cut at 1 KiB", "[common][status]") {
  grpc::Status g = ToGrpcStatus(absl::InternalError(std::string(5000, 'x')));
  CHECK(g.error_message().size() == kMaxStatusMessageBytes);
}

}  // namespace
}  // namespace ppn
