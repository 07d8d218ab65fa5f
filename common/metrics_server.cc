#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, metrics_listen, "",
          "host:port[,host:port] to serve Prometheus metrics on over HTTP (GET /metrics): a node's mesh address "
          "and loopback, never a tenant-facing address; empty: none");

namespace ppn::metrics {
namespace {

constexpr int kMaxClients = 8;
constexpr int kTimeoutMs = 3000;
constexpr size_t kMaxRequest = 8192;

// A listening socket on "host:port", or -1.
int Listen(const std::string& address, int* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return -1;
  std::string host = address.substr(0, colon);
  int p = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &p) || p < 0 || p > 65535) return -1;
  bool v6 = absl::StartsWith(host, "[");
  if (v6) host = host.substr(1, host.size() - 2);
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(p);
    if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1) return close(fd), -1;
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(p);
    if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) return close(fd), -1;
    len = sizeof *a;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, 16) != 0) return close(fd), -1;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

void WriteAll(int fd, const std::string& data) {
  for (size_t off = 0; off < data.size();) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                    const Registry* registry) {
  std::unique_ptr<MetricsServer> server(new MetricsServer(registry));
  for (const std::string& address : std::vector<std::string>(absl::StrSplit(listen, ',', absl::SkipWhitespace()))) {
    int port = 0;
    int fd = Listen(address, &port);
    if (fd < 0) return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", address));
    if (server->fds_.empty()) server->port_ = port;
    server->fds_.push_back(fd);
  }
  if (server->fds_.empty()) return absl::InvalidArgumentError("metrics: no listen address");
  for (int fd : server->fds_) server->threads_.emplace_back([s = server.get(), fd] { s->Accept(fd); });
  return server;
}

MetricsServer::~MetricsServer() {
  for (int fd : fds_) shutdown(fd, SHUT_RDWR);
  for (std::thread& t : threads_) t.join();
  for (int fd : fds_) close(fd);
  while (active_.load() > 0) usleep(10000);  // clients finish within their timeout
}

void MetricsServer::Accept(int fd) {
  while (true) {
    int client = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    if (active_.fetch_add(1) >= kMaxClients) {
      active_.fetch_sub(1);
      close(client);
      continue;
    }
    std::thread([this, client] {
      Serve(client);
      close(client);
      active_.fetch_sub(1);
    }).detach();
  }
}

void MetricsServer::Serve(int client) {
  timeval tv{kTimeoutMs / 1000, 0};
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequest) {
    pollfd p{client, POLLIN, 0};
    if (poll(&p, 1, kTimeoutMs) <= 0) return;
    ssize_t n = recv(client, buf, sizeof buf, 0);
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  std::string line = request.substr(0, request.find("\r\n"));
  if (absl::StartsWith(line, "GET /metrics ") || absl::StartsWith(line, "GET /metrics?")) {
    std::string body = registry_->Render();
    WriteAll(client, absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                  "Content-Length: ",
                                  body.size(), "\r\nConnection: close\r\n\r\n", body));
  } else {
    std::string body = "only GET /metrics is served here\n";
    WriteAll(client, absl::StrCat("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: ", body.size(),
                                  "\r\nConnection: close\r\n\r\n", body));
  }
}

absl::Status StartDefaultMetricsServer() {
  static absl::Mutex mu(absl::kConstInit);
  static MetricsServer* server ABSL_GUARDED_BY(mu) = nullptr;
  std::string listen = absl::GetFlag(FLAGS_metrics_listen);
  absl::MutexLock l(&mu);
  if (listen.empty() || server != nullptr) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<MetricsServer>> started = MetricsServer::Start(listen, &Default());
  if (!started.ok()) return started.status();
  spdlog::info("metrics.listening address={} port={}", listen, (*started)->port());
  server = started->release();  // serves until the process ends
  return absl::OkStatus();
}

}  // namespace ppn::metrics
