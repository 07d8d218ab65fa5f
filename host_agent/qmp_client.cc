#include "host_agent/qmp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ppn::host {

absl::StatusOr<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path, absl::Duration timeout) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("QMP socket path too long: ", socket_path));
  }
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  absl::Time deadline = absl::Now() + timeout;
  int fd = -1;
  // QEMU creates the socket shortly after it starts: retry until the deadline.
  while (true) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError("socket() failed");
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    int err = errno;
    close(fd);
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat("QMP socket ", socket_path, " does not answer: ", std::strerror(err)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::unique_ptr<QmpClient> client(new QmpClient(fd));
  absl::StatusOr<nlohmann::json> greeting = client->ReadMessage(deadline);
  if (!greeting.ok()) return greeting.status();
  if (!greeting->contains("QMP")) return absl::UnavailableError("QMP greeting missing");
  absl::StatusOr<nlohmann::json> caps = client->Execute("qmp_capabilities", nullptr, deadline - absl::Now());
  if (!caps.ok()) return caps.status();
  return client;
}

QmpClient::~QmpClient() { close(fd_); }

absl::StatusOr<nlohmann::json> QmpClient::ReadMessage(absl::Time deadline) {
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r") == std::string::npos) continue;
      nlohmann::json msg = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (msg.is_discarded()) return absl::InternalError("QMP sent malformed JSON");
      return msg;
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("QMP did not answer in time");
    pollfd p{fd_, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;
    char buf[8192];
    ssize_t n = read(fd_, buf, sizeof buf);
    if (n <= 0) return absl::UnavailableError("QMP connection closed (QEMU exited?)");
    buffer_.append(buf, n);
  }
}

absl::StatusOr<nlohmann::json> QmpClient::Execute(const std::string& command, const nlohmann::json& arguments,
                                                  absl::Duration timeout) {
  return ExecuteWithFd(command, arguments, -1, timeout);
}

absl::StatusOr<nlohmann::json> QmpClient::ExecuteWithFd(const std::string& command, const nlohmann::json& arguments,
                                                        int fd, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  int id = next_id_++;
  nlohmann::json request = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  std::string line = request.dump() + "\n";
  size_t first = 0;
  if (fd >= 0) {
    // The descriptor rides with the command's first byte (SCM_RIGHTS), as QMP's getfd expects.
    char control[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{line.data(), 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ssize_t n;
    do {
      n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != 1) return absl::UnavailableError("QMP connection closed (QEMU exited?)");
    first = 1;
  }
  for (size_t sent = first; sent < line.size();) {
    ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError("QMP connection closed (QEMU exited?)");
    }
    sent += n;
  }
  while (true) {
    absl::StatusOr<nlohmann::json> msg = ReadMessage(deadline);
    if (!msg.ok()) return msg.status();
    if (msg->contains("event")) {
      events_.push_back(*std::move(msg));
      continue;
    }
    if (!msg->contains("id") || (*msg)["id"] != id) continue;
    if (msg->contains("error")) {
      return absl::FailedPreconditionError(
          absl::StrCat("QEMU refused ", command, ": ", (*msg)["error"].value("desc", std::string("unknown error"))));
    }
    return msg->value("return", nlohmann::json::object());
  }
}

std::vector<nlohmann::json> QmpClient::TakeEvents() {
  std::vector<nlohmann::json> out;
  out.swap(events_);
  return out;
}

}  // namespace ppn::host
