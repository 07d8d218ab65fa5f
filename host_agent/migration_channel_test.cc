#include "host_agent/migration_channel.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"

namespace ppn::host {
namespace {

constexpr uint32_t kPort = 23977;

// A raw connection that sends `bytes` (a stranger, or a source with the wrong ticket).
int Dial(const std::string& bytes) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(kPort);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  REQUIRE(connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  if (!bytes.empty()) REQUIRE(send(s, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  return s;
}

// True when the peer closed `s` within 10 s.
bool ClosedByPeer(int s) {
  timeval tv{10, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  return read(s, &c, 1) == 0;
}

struct Handed {
  absl::Mutex mu;
  std::vector<std::pair<std::string, int>> got;
  bool WaitFor(size_t n) {
    absl::MutexLock l(&mu);
    auto enough = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return got.size() >= n; };
    return mu.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
};

TEST_CASE("only the connection with the target's ticket reaches QEMU, and strangers leave it waiting",
          "[host_agent][migration_channel]") {
  Handed handed;
  IncomingGate gate(
      [&](const std::string& vm, int fd) {
        absl::MutexLock l(&handed.mu);
        handed.got.emplace_back(vm, fd);
      },
      absl::Milliseconds(300));
  std::string ticket = NewMigrationTicket();
  REQUIRE(ticket.size() == kMigrationTicketBytes);
  REQUIRE(gate.Open("vm-1", "127.0.0.1", kPort, ticket).ok());

  int silent = Dial("");                                      // says nothing
  int wrong = Dial(std::string(kMigrationTicketBytes, 'x'));  // a wrong ticket
  CHECK(ClosedByPeer(wrong));
  CHECK(ClosedByPeer(silent));
  CHECK(gate.refused() == 2);
  {
    absl::MutexLock l(&handed.mu);
    CHECK(handed.got.empty());
  }

  absl::StatusOr<int> source = ConnectMigration("tcp:127.0.0.1:" + std::to_string(kPort), ticket, absl::Seconds(5));
  REQUIRE(source.ok());
  REQUIRE(handed.WaitFor(1));
  int target_fd;
  {
    absl::MutexLock l(&handed.mu);
    CHECK(handed.got[0].first == "vm-1");
    target_fd = handed.got[0].second;
  }
  // What follows the ticket is the stream itself, untouched.
  REQUIRE(send(*source, "TLS", 3, MSG_NOSIGNAL) == 3);
  char buf[3];
  REQUIRE(read(target_fd, buf, 3) == 3);
  CHECK(std::string(buf, 3) == "TLS");
  // One stream per target: the listener is gone.
  CHECK(ConnectMigration("tcp:127.0.0.1:" + std::to_string(kPort), ticket, absl::Seconds(2)).status().code() ==
        absl::StatusCode::kUnavailable);
  close(*source);
  close(target_fd);
  close(silent);
  close(wrong);
}

TEST_CASE("strangers holding connections open cannot keep the source out", "[host_agent][migration_channel]") {
  Handed handed;
  IncomingGate gate(
      [&](const std::string& vm, int fd) {
        absl::MutexLock l(&handed.mu);
        handed.got.emplace_back(vm, fd);
      },
      absl::Seconds(30));  // long: the strangers would hold their places all that time
  std::string ticket = NewMigrationTicket();
  REQUIRE(gate.Open("vm-1", "127.0.0.1", kPort, ticket).ok());
  std::vector<int> strangers;
  for (int i = 0; i < 40; ++i) strangers.push_back(Dial(""));
  absl::StatusOr<int> source = ConnectMigration("tcp:127.0.0.1:" + std::to_string(kPort), ticket, absl::Seconds(5));
  REQUIRE(source.ok());
  CHECK(handed.WaitFor(1));
  CHECK(gate.refused() >= 32);  // all but the last few strangers were let go
  for (int s : strangers) close(s);
  close(*source);
  absl::MutexLock l(&handed.mu);
  for (const auto& [vm, fd] : handed.got) close(fd);
}

TEST_CASE("a migration URI and ticket are checked before anything connects", "[host_agent][migration_channel]") {
  CHECK(ConnectMigration("unix:/x", NewMigrationTicket(), absl::Seconds(1)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ConnectMigration("tcp:127.0.0.1:1", "short", absl::Seconds(1)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ConnectMigration("tcp:127.0.0.1:1", NewMigrationTicket(), absl::Seconds(1)).status().code() ==
        absl::StatusCode::kUnavailable);
  IncomingGate gate([](const std::string&, int fd) { close(fd); });
  CHECK(gate.Open("vm-1", "127.0.0.1", kPort, "short").code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(gate.Open("vm-1", "127.0.0.1", kPort, NewMigrationTicket()).ok());
  gate.Close("vm-1");
  CHECK(ConnectMigration("tcp:127.0.0.1:" + std::to_string(kPort), NewMigrationTicket(), absl::Seconds(1))
            .status()
            .code() == absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace ppn::host
