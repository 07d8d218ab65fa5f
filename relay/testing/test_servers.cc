#include "relay/testing/test_servers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ppn::relay::testing {
namespace {

sockaddr_in Loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

int BoundSocket(int type, int* port) {
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = Loopback(0);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("bind");
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

void SetTimeout(int fd, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

TcpServer::TcpServer(std::string name, Mode mode) : name_(std::move(name)), mode_(mode) {
  listen_fd_ = BoundSocket(SOCK_STREAM, &port_);
  if (listen(listen_fd_, 128) != 0) throw std::runtime_error("listen");
  acceptor_ = std::thread([this] {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted_;
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) {
        close(fd);
        break;
      }
      open_.push_back(fd);
      workers_.emplace_back([this, fd] { Serve(fd); });
    }
  });
}

TcpServer::~TcpServer() { Stop(); }

void TcpServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  close(listen_fd_);
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : open_) shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  std::lock_guard<std::mutex> l(mu_);
  for (int fd : open_) close(fd);
  open_.clear();
}

void TcpServer::Serve(int fd) {
  SetTimeout(fd, absl::Seconds(30));
  char buf[16384];
  if (mode_ == Mode::kHttp) {
    std::string request;
    while (!absl::StrContains(request, "\r\n\r\n")) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string reply =
        absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", name_.size(), "\r\nConnection: close\r\n\r\n", name_);
    SendAll(fd, reply);
    shutdown(fd, SHUT_WR);
    return;
  }
  SendAll(fd, name_ + "\n");
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    if (send(fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
  }
  shutdown(fd, SHUT_WR);
}

UdpServer::UdpServer(std::string name) : name_(std::move(name)) {
  fd_ = BoundSocket(SOCK_DGRAM, &port_);
  thread_ = std::thread([this] {
    char buf[65536];
    while (!stopping_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      sockaddr_storage from{};
      socklen_t len = sizeof from;
      ssize_t n = recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      std::string reply = name_ + ":" + std::string(buf, static_cast<size_t>(n));
      sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  });
}

UdpServer::~UdpServer() {
  stopping_ = true;
  thread_.join();
  close(fd_);
}

KeepLogs::~KeepLogs() {
  const char* out = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  if (out == nullptr) return;
  for (const std::string& f : files_) {
    std::ifstream in(dir_ + "/" + f);
    std::string name = f;
    std::replace(name.begin(), name.end(), '/', '-');
    std::ofstream(std::string(out) + "/" + name) << in.rdbuf();
  }
}

int FreePort() {
  int port = 0;
  int fd = BoundSocket(SOCK_STREAM, &port);
  close(fd);
  return port;
}

int Listener(int backlog, int* port) {
  int fd = BoundSocket(SOCK_STREAM, port);
  if (listen(fd, backlog) != 0) throw std::runtime_error("listen");
  return fd;
}

int Connect(int port, absl::Duration timeout) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  SetTimeout(fd, timeout);
  sockaddr_in a = Loopback(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (recv(fd, &c, 1, 0) == 1) {
    line.push_back(c);
    if (c == '\n') break;
  }
  return line;
}

bool ReadsEof(int fd, std::string* rest) {
  char buf[4096];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (rest != nullptr) rest->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return true;
    return errno == ECONNRESET || errno == EPIPE;  // not EAGAIN: a timeout is no close
  }
}

void SendAll(int fd, const std::string& bytes) {
  size_t at = 0;
  while (at < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    if (n <= 0) return;
    at += static_cast<size_t>(n);
  }
}

absl::StatusOr<std::string> HttpGet(int port, absl::Duration timeout, const std::string& path) {
  int fd = Connect(port, timeout);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
  SendAll(fd, absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: relay\r\nConnection: close\r\n\r\n"));
  std::string response;
  bool closed = ReadsEof(fd, &response);
  close(fd);
  if (!closed && response.empty()) return absl::DeadlineExceededError("no answer");
  size_t body = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/1.") || !absl::StrContains(response.substr(0, 16), " 200") ||
      body == std::string::npos) {
    return absl::UnavailableError(response.empty() ? "closed without an answer" : "not a 200");
  }
  return response.substr(body + 4);
}

HttpPoller::HttpPoller(int port, const std::string& path, absl::Duration every)
    : port_(port), path_(path), every_(every) {
  thread_ = std::thread([this] {
    while (!stop_) {
      absl::Time start = absl::Now();
      absl::StatusOr<std::string> body = HttpGet(port_, absl::Seconds(1), path_);
      {
        std::lock_guard<std::mutex> l(mu_);
        polls_.push_back({absl::Now(), body.ok(), body.ok() ? *body : ""});
      }
      absl::SleepFor(start + every_ - absl::Now());
    }
  });
}

HttpPoller::~HttpPoller() {
  stop_ = true;
  thread_.join();
}

std::vector<HttpPoller::Poll> HttpPoller::polls() {
  std::lock_guard<std::mutex> l(mu_);
  return polls_;
}

bool HttpPoller::WaitForAnswers(int n, absl::Duration timeout, const std::string& body) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    {
      std::lock_guard<std::mutex> l(mu_);
      int streak = 0;
      for (auto it = polls_.rbegin(); it != polls_.rend() && it->ok && (body.empty() || it->body == body); ++it) {
        ++streak;
      }
      if (streak >= n) return true;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return false;
}

absl::Duration HttpPoller::LongestSilence(absl::Time from) {
  std::lock_guard<std::mutex> l(mu_);
  absl::Duration longest = absl::ZeroDuration();
  absl::Time last = absl::InfinitePast();
  for (const Poll& p : polls_) {
    if (!p.ok) continue;
    if (p.at > from && last != absl::InfinitePast()) longest = std::max(longest, p.at - last);
    last = p.at;
  }
  return longest;
}

int UdpSocket() {
  int port = 0;
  int fd = BoundSocket(SOCK_DGRAM, &port);
  return fd;
}

std::string UdpAsk(int fd, int port, const std::string& datagram, absl::Duration timeout) {
  SetTimeout(fd, timeout);
  sockaddr_in a = Loopback(port);
  sendto(fd, datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
  char buf[65536];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  return n <= 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

}  // namespace ppn::relay::testing
