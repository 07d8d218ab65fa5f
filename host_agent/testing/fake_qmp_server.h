#pragma once

// FakeQmpServer: a canned QMP endpoint on a unix socket, for tests of the agent's QMP use
// without QEMU. It greets like QEMU, accepts qmp_capabilities and answers every other command
// with the handler registered for it ({"return": {}} when there is none). One thread serves
// every connection. Thread-safe; handlers run on the server's thread.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace ppn::host::testing {

class FakeQmpServer {
 public:
  // Returns the reply without its id: Return(value) or Error(description).
  using Handler = std::function<nlohmann::json(const nlohmann::json& arguments)>;
  static nlohmann::json Return(nlohmann::json value = nlohmann::json::object());
  static nlohmann::json Error(const std::string& description);

  // Listens on `socket_path` (replacing a stale socket).
  static absl::StatusOr<std::unique_ptr<FakeQmpServer>> Start(const std::string& socket_path);
  ~FakeQmpServer();
  FakeQmpServer(const FakeQmpServer&) = delete;
  FakeQmpServer& operator=(const FakeQmpServer&) = delete;

  void Handle(const std::string& command, Handler handler);
  // Commands received so far, in order (qmp_capabilities left out), and their arguments.
  std::vector<std::string> commands();
  std::vector<nlohmann::json> ArgumentsOf(const std::string& command);

  // Stops answering, as an exiting QEMU does: every connection is closed (after the reply
  // being written, when called from a handler) and the socket removed. From another thread it
  // returns once that is done.
  void Close();

 private:
  FakeQmpServer(std::string path, int listen_fd, int wake_fd[2]);
  void Serve();
  // The reply line to one request line.
  std::string Answer(const std::string& line);

  const std::string path_;
  const int listen_fd_;
  const int wake_read_, wake_write_;
  std::thread thread_;
  absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, Handler> handlers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, nlohmann::json>> received_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::host::testing
