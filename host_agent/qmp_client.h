#pragma once

// QmpClient speaks the QEMU Machine Protocol (JSON over a unix socket) to one QEMU process.
// The agent's only way to control a running VM. Not thread-safe: one caller at a time
// (VmManager holds the VM's lock around each use).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace ppn::host {

class QmpClient {
 public:
  // Connects, reads the greeting and leaves capability negotiation mode. UNAVAILABLE if the
  // socket does not answer within `timeout`.
  static absl::StatusOr<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path, absl::Duration timeout);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs `command` and returns its "return" value. A QEMU error comes back as
  // FAILED_PRECONDITION with QEMU's description; no answer within `timeout` is
  // DEADLINE_EXCEEDED; a closed socket is UNAVAILABLE. Events seen meanwhile are kept.
  absl::StatusOr<nlohmann::json> Execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                                         absl::Duration timeout = absl::Seconds(10));

  // Execute, passing the descriptor `fd` with the command (SCM_RIGHTS), as `getfd` takes it.
  // The caller keeps its own copy of `fd` and closes it.
  absl::StatusOr<nlohmann::json> ExecuteWithFd(const std::string& command, const nlohmann::json& arguments, int fd,
                                               absl::Duration timeout = absl::Seconds(10));

  // Events received so far (and clears them).
  std::vector<nlohmann::json> TakeEvents();

 private:
  explicit QmpClient(int fd) : fd_(fd) {}
  absl::StatusOr<nlohmann::json> ReadMessage(absl::Time deadline);

  int fd_;
  std::string buffer_;
  int next_id_ = 1;
  std::vector<nlohmann::json> events_;
};

}  // namespace ppn::host
