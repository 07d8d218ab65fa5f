#include "host_agent/migration_channel.h"

#include <algorithm>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace ppn::host {
namespace {

constexpr size_t kMaxPendingPerVm = 8;  // connections waiting to show a ticket, per VM

// "tcp:HOST:PORT" → host and port.
bool ParseUri(const std::string& uri, std::string* host, uint16_t* port) {
  if (!absl::StartsWith(uri, "tcp:")) return false;
  std::string rest = uri.substr(4);
  size_t colon = rest.rfind(':');
  uint32_t p;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(rest.substr(colon + 1), &p) || p == 0 ||
      p > 65535) {
    return false;
  }
  *host = rest.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  *port = static_cast<uint16_t>(p);
  return true;
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

std::string NewMigrationTicket() {
  std::string ticket(kMigrationTicketBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(ticket.data()), ticket.size()) != 1) return "";
  return ticket;
}

absl::StatusOr<int> ConnectMigration(const std::string& uri, const std::string& ticket, absl::Duration timeout) {
  std::string host;
  uint16_t port;
  if (!ParseUri(uri, &host, &port)) {
    return absl::InvalidArgumentError("migration_uri must be tcp:HOST:PORT from PrepareIncoming");
  }
  if (ticket.size() != kMigrationTicketBytes) {
    return absl::InvalidArgumentError("migration_ticket from PrepareIncoming is required");
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot resolve migration target ", host));
  }
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(found);
    return absl::InternalError("socket() failed");
  }
  SetNonBlocking(fd);
  int r = connect(fd, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  if (r != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) == 1 &&
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
      r = 0;
    } else {
      errno = err != 0 ? err : ETIMEDOUT;
    }
  }
  if (r != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot connect to the migration target ", host, ":", port, ": ", std::strerror(err)));
  }
  // QEMU writes the stream itself: give it a blocking socket.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (send(fd, ticket.data(), ticket.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(ticket.size())) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("the migration target ", host, ":", port, " closed the connection"));
  }
  return fd;
}

IncomingGate::IncomingGate(HandOff hand_off, absl::Duration ticket_timeout)
    : hand_off_(std::move(hand_off)), ticket_timeout_(ticket_timeout) {
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
    wake_read_ = p[0];
    wake_write_ = p[1];
  }
  thread_ = std::thread([this] { Loop(); });
}

IncomingGate::~IncomingGate() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  Wake();
  thread_.join();
  for (auto& [_, l] : listeners_) close(l.first);
  for (auto& [fd, _] : pending_) close(fd);
  close(wake_read_);
  close(wake_write_);
}

void IncomingGate::Wake() {
  char c = 0;
  ssize_t ignored = write(wake_write_, &c, 1);
  (void)ignored;
}

absl::Status IncomingGate::Open(const std::string& vm_id, const std::string& address, uint32_t port,
                                const std::string& ticket) {
  if (ticket.size() != kMigrationTicketBytes) return absl::InvalidArgumentError("a migration ticket has 32 bytes");
  Close(vm_id);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("migration address ", address, " is not an IPv4 address"));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 8) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot listen for a migration on ", address, ":", port, ": ", std::strerror(err)));
  }
  {
    absl::MutexLock l(&mu_);
    listeners_[vm_id] = {fd, ticket};
  }
  Wake();
  return absl::OkStatus();
}

void IncomingGate::Close(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  auto it = listeners_.find(vm_id);
  if (it != listeners_.end()) {
    close(it->second.first);
    listeners_.erase(it);
  }
  for (auto p = pending_.begin(); p != pending_.end();) {
    if (p->second.vm_id == vm_id) {
      close(p->first);
      p = pending_.erase(p);
    } else {
      ++p;
    }
  }
}

int IncomingGate::refused() {
  absl::MutexLock l(&mu_);
  return refused_;
}

void IncomingGate::Loop() {
  while (true) {
    std::vector<pollfd> fds = {{wake_read_, POLLIN, 0}};
    std::map<int, std::string> listening;  // fd → vm
    absl::Time next = absl::Now() + absl::Seconds(1);
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      for (const auto& [vm, entry] : listeners_) {
        fds.push_back({entry.first, POLLIN, 0});
        listening[entry.first] = vm;
      }
      for (const auto& [fd, p] : pending_) {
        fds.push_back({fd, POLLIN, 0});
        next = std::min(next, p.deadline);
      }
    }
    int wait_ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(next - absl::Now()))) + 1;
    if (poll(fds.data(), fds.size(), wait_ms) < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) {
      char buf[64];
      while (read(wake_read_, buf, sizeof buf) > 0) {
      }
    }
    std::vector<std::pair<std::string, int>> ready;  // handed off outside the lock
    {
      absl::MutexLock l(&mu_);
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto lis = listening.find(fds[i].fd);
        if (lis != listening.end()) {
          if (listeners_.count(lis->second) == 0 || listeners_[lis->second].first != fds[i].fd) continue;  // closed
          int c = accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (c < 0) {
            // Out of descriptors: the listener stays readable, so wait instead of spinning.
            if (errno == EMFILE || errno == ENFILE) absl::SleepFor(absl::Milliseconds(50));
            continue;
          }
          // Strangers holding connections open cannot crowd out the source: past a few waiting
          // for one VM, the oldest goes (the source sends its ticket at once).
          std::vector<std::map<int, Pending>::iterator> same;
          for (auto q = pending_.begin(); q != pending_.end(); ++q) {
            if (q->second.vm_id == lis->second) same.push_back(q);
          }
          if (same.size() >= kMaxPendingPerVm) {
            auto oldest = *std::min_element(same.begin(), same.end(), [](const auto& a, const auto& b) {
              return a->second.deadline < b->second.deadline;
            });
            close(oldest->first);
            pending_.erase(oldest);
            ++refused_;
          }
          pending_[c] = {lis->second, "", absl::Now() + ticket_timeout_};
          continue;
        }
        auto p = pending_.find(fds[i].fd);
        if (p == pending_.end()) continue;
        char buf[kMigrationTicketBytes];
        // Never past the ticket: what follows is the source QEMU's TLS, which is QEMU's to read.
        ssize_t n = read(p->first, buf, kMigrationTicketBytes - p->second.received.size());
        if (n <= 0) {
          if (n < 0 && errno == EAGAIN) continue;
          close(p->first);
          pending_.erase(p);
          ++refused_;
          continue;
        }
        p->second.received.append(buf, n);
        if (p->second.received.size() < kMigrationTicketBytes) continue;
        auto lis2 = listeners_.find(p->second.vm_id);
        bool match = lis2 != listeners_.end() &&
                     CRYPTO_memcmp(p->second.received.data(), lis2->second.second.data(), kMigrationTicketBytes) == 0;
        int fd = p->first;
        std::string vm = p->second.vm_id;
        pending_.erase(p);
        if (!match) {
          close(fd);
          ++refused_;
          spdlog::warn("migration.refused_connection vm={} reason=\"wrong ticket\"", vm);
          continue;
        }
        // One stream per target: stop listening, drop the others waiting for it.
        close(lis2->second.first);
        listeners_.erase(lis2);
        for (auto q = pending_.begin(); q != pending_.end();) {
          if (q->second.vm_id == vm) {
            close(q->first);
            q = pending_.erase(q);
            ++refused_;
          } else {
            ++q;
          }
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        ready.emplace_back(vm, fd);
      }
      absl::Time now = absl::Now();
      for (auto p = pending_.begin(); p != pending_.end();) {
        if (p->second.deadline <= now) {
          spdlog::warn("migration.refused_connection vm={} reason=\"no ticket within {}\"", p->second.vm_id,
                       absl::FormatDuration(ticket_timeout_));
          close(p->first);
          p = pending_.erase(p);
          ++refused_;
        } else {
          ++p;
        }
      }
    }
    for (const auto& [vm, fd] : ready) hand_off_(vm, fd);
  }
}

}  // namespace ppn::host
