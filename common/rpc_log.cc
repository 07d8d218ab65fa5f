#include "common/rpc_log.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace ppn {

grpc::Status RpcFailed(absl::string_view rpc, const absl::Status& status, std::initializer_list<LogField> ids) {
  std::string line = absl::StrCat("rpc.failed rpc=", rpc, " code=", absl::StatusCodeToString(status.code()));
  for (const LogField& f : ids) absl::StrAppend(&line, " ", f.key, "=", LogValue(f.value));
  absl::StrAppend(&line, " error=", LogValue(status.message().substr(0, kMaxStatusMessageBytes)));
  switch (status.code()) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDeadlineExceeded: spdlog::warn("{}", line); break;
    default: spdlog::info("{}", line);
  }
  return ToGrpcStatus(status);
}

}  // namespace ppn
