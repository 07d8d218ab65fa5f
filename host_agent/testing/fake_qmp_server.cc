#include "host_agent/testing/fake_qmp_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ppn::host::testing {
namespace {

constexpr char kGreeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"fake\"}, "
    "\"capabilities\": []}}\r\n";

void WriteAll(int fd, const std::string& data) {
  for (size_t sent = 0; sent < data.size();) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += n;
  }
}

}  // namespace

nlohmann::json FakeQmpServer::Return(nlohmann::json value) { return {{"return", std::move(value)}}; }

nlohmann::json FakeQmpServer::Error(const std::string& description) {
  return {{"error", {{"class", "GenericError"}, {"desc", description}}}};
}

absl::StatusOr<std::unique_ptr<FakeQmpServer>> FakeQmpServer::Start(const std::string& socket_path) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path)) return absl::InvalidArgumentError("socket path too long");
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  unlink(socket_path.c_str());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 16) != 0) {
    if (fd >= 0) close(fd);
    return absl::InternalError(absl::StrCat("cannot listen on ", socket_path, ": ", std::strerror(errno)));
  }
  int wake[2];
  if (pipe2(wake, O_CLOEXEC) != 0) {
    close(fd);
    return absl::InternalError("pipe failed");
  }
  std::unique_ptr<FakeQmpServer> server(new FakeQmpServer(socket_path, fd, wake));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

FakeQmpServer::FakeQmpServer(std::string path, int listen_fd, int wake_fd[2])
    : path_(std::move(path)), listen_fd_(listen_fd), wake_read_(wake_fd[0]), wake_write_(wake_fd[1]) {}

FakeQmpServer::~FakeQmpServer() {
  Close();
  if (thread_.joinable()) thread_.join();
  close(wake_read_);
  close(wake_write_);
}

void FakeQmpServer::Handle(const std::string& command, Handler handler) {
  absl::MutexLock l(&mu_);
  handlers_[command] = std::move(handler);
}

std::vector<std::string> FakeQmpServer::commands() {
  absl::MutexLock l(&mu_);
  std::vector<std::string> out;
  for (const auto& [c, _] : received_) out.push_back(c);
  return out;
}

std::vector<nlohmann::json> FakeQmpServer::ArgumentsOf(const std::string& command) {
  absl::MutexLock l(&mu_);
  std::vector<nlohmann::json> out;
  for (const auto& [c, a] : received_) {
    if (c == command) out.push_back(a);
  }
  return out;
}

void FakeQmpServer::Close() {
  absl::MutexLock l(&mu_);
  if (!closing_) unlink(path_.c_str());  // at once, as an exiting QEMU does (never a successor's socket)
  closing_ = true;
  if (std::this_thread::get_id() == thread_.get_id()) return;  // Serve() closes after this reply
  char c = 1;
  ssize_t ignored = write(wake_write_, &c, 1);
  (void)ignored;
  mu_.Await(absl::Condition(&closed_));
}

std::string FakeQmpServer::Answer(const std::string& line) {
  nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!request.is_object() || !request.contains("execute")) return Error("malformed request").dump() + "\r\n";
  std::string command = request["execute"].get<std::string>();
  nlohmann::json arguments = request.value("arguments", nlohmann::json::object());
  nlohmann::json reply = Return();
  if (command != "qmp_capabilities") {
    Handler handler;
    {
      absl::MutexLock l(&mu_);
      received_.emplace_back(command, arguments);
      auto it = handlers_.find(command);
      if (it != handlers_.end()) handler = it->second;
    }
    if (handler) reply = handler(arguments);
  }
  if (request.contains("id")) reply["id"] = request["id"];
  return reply.dump() + "\r\n";
}

void FakeQmpServer::Serve() {
  std::vector<std::pair<int, std::string>> clients;  // fd, unread input
  while (true) {
    {
      absl::MutexLock l(&mu_);
      if (closing_) break;
    }
    std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    for (const auto& [fd, _] : clients) fds.push_back({fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), 1000) <= 0) continue;
    if (fds[0].revents & POLLIN) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        WriteAll(fd, kGreeting);
        clients.emplace_back(fd, "");
      }
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto& [fd, buffer] = clients[i - 2];
      char buf[4096];
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) {
        close(fd);
        fd = -1;
        continue;
      }
      buffer.append(buf, n);
      size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        if (line.find_first_not_of(" \r") != std::string::npos) WriteAll(fd, Answer(line));
      }
    }
    clients.erase(std::remove_if(clients.begin(), clients.end(), [](const auto& c) { return c.first < 0; }),
                  clients.end());
  }
  for (const auto& [fd, _] : clients) close(fd);
  close(listen_fd_);
  absl::MutexLock l(&mu_);
  closed_ = true;
}

}  // namespace ppn::host::testing
