#pragma once

// Servers and clients on 127.0.0.1 for relay tests, standing in for a VM's forwarded port on
// a node. Tests only: failures to set up throw.

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ppn::relay::testing {

// A TCP server on 127.0.0.1:0. kGreetAndEcho: each connection gets "<name>\n", then its bytes
// echoed; when the client half-closes, the server closes. kHttp: each connection's request
// gets "HTTP/1.1 200 OK" with body "<name>", then the server closes.
class TcpServer {
 public:
  enum class Mode { kGreetAndEcho, kHttp };
  TcpServer(std::string name, Mode mode);
  ~TcpServer();
  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;

  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }
  // Closes the listener (new connections are refused) and every open connection.
  void Stop();

 private:
  void Serve(int fd);

  const std::string name_;
  const Mode mode_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> open_;             // guarded by mu_
  std::vector<std::thread> workers_;  // guarded by mu_
};

// A UDP server on 127.0.0.1:0 that answers each datagram with "<name>:<datagram>".
class UdpServer {
 public:
  explicit UdpServer(std::string name);
  ~UdpServer();
  int port() const { return port_; }

 private:
  const std::string name_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// Copies files of `dir` (the services' logs) to the test's outputs
// (bazel-testlogs/<test>/test.outputs) when destroyed, passed or not.
class KeepLogs {
 public:
  KeepLogs(std::string dir, std::vector<std::string> files) : dir_(std::move(dir)), files_(std::move(files)) {}
  ~KeepLogs();

 private:
  const std::string dir_;
  const std::vector<std::string> files_;
};

// A port of 127.0.0.1 that nothing listens on now (it was free a moment ago).
int FreePort();
// A socket listening on 127.0.0.1:`*port` (chosen) with `backlog`, which nobody accepts on.
int Listener(int backlog, int* port);

// A blocking TCP client of 127.0.0.1:`port`, reads bounded by `timeout`; -1 if it cannot connect.
int Connect(int port, absl::Duration timeout = absl::Seconds(2));
// Reads up to and including '\n' (or EOF); "" on EOF, reset or timeout before any byte.
std::string ReadLine(int fd);
// Reads until EOF: true if the peer closed (normally or with a reset) within the fd's timeout.
bool ReadsEof(int fd, std::string* rest = nullptr);
void SendAll(int fd, const std::string& bytes);

// GET `path` over a new connection to 127.0.0.1:`port`; the body, or an error (refused,
// reset, timeout, not a 200).
absl::StatusOr<std::string> HttpGet(int port, absl::Duration timeout, const std::string& path = "/");

// An HTTP client that GETs 127.0.0.1:`port``path` every `every` (each poll a new connection,
// at most 1 s), as a tenant's monitoring would, from a thread of its own.
class HttpPoller {
 public:
  struct Poll {
    absl::Time at;     // when it ended
    bool ok = false;   // answered 200
    std::string body;  // "" unless ok
  };
  HttpPoller(int port, const std::string& path = "/", absl::Duration every = absl::Milliseconds(10));
  ~HttpPoller();
  std::vector<Poll> polls();
  // Waits until the last `n` polls were answered (with `body`, if not empty).
  bool WaitForAnswers(int n, absl::Duration timeout, const std::string& body = "");
  // The longest time between consecutive answered polls among those that ended after `from`
  // (counting from the last one answered before it): what a tenant saw of an interruption.
  absl::Duration LongestSilence(absl::Time from);

 private:
  const int port_;
  const std::string path_;
  const absl::Duration every_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<Poll> polls_;  // guarded by mu_
  std::thread thread_;
};

// One datagram to 127.0.0.1:`port` from `fd` (a UDP socket of 127.0.0.1), and its answer, or ""
// after `timeout`.
int UdpSocket();
std::string UdpAsk(int fd, int port, const std::string& datagram, absl::Duration timeout = absl::Seconds(2));

}  // namespace ppn::relay::testing
