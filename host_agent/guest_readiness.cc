#include "host_agent/guest_readiness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ppn::host {
namespace {

constexpr char kReadyLine[] = "PPN-READY";

bool Readable(int fd, short* revents) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  *revents = p.revents;
  return true;
}

}  // namespace

GuestReadiness::GuestReadiness(Target target) : target_(std::move(target)) {
  struct stat st {};
  if (!target_.console_log.empty() && stat(target_.console_log.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    console_offset_ = static_cast<uint64_t>(st.st_size);
  }
}

GuestReadiness::~GuestReadiness() {
  if (channel_fd_ >= 0) close(channel_fd_);
  CloseProbe();
}

std::optional<std::string> GuestReadiness::Poll(absl::Time now) {
  if (!target_.channel_socket.empty()) {
    if (channel_fd_ < 0) {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      if (target_.channel_socket.size() < sizeof(addr.sun_path)) {
        std::memcpy(addr.sun_path, target_.channel_socket.c_str(), target_.channel_socket.size() + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
          channel_fd_ = fd;
        } else if (fd >= 0) {
          close(fd);  // QEMU has not made its socket yet: the next poll tries again
        }
      }
    }
    if (channel_fd_ >= 0 && ReadChannel()) return std::string("the guest said PPN-READY");
  }
  if (!target_.console_marker.empty() && !target_.console_log.empty() && ReadConsole()) {
    return std::string("its console showed the image's ready marker");
  }
  return ProbeStep(now);
}

bool GuestReadiness::ReadConsole() {
  int fd = open(target_.console_log.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;  // QEMU has not made it yet
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return false;
  }
  if (static_cast<uint64_t>(st.st_size) < console_offset_) {  // a new log (the VM booted again)
    console_offset_ = 0;
    console_tail_.clear();
  }
  std::string chunk(kConsoleChunk, '\0');
  ssize_t n;
  do {
    n = pread(fd, chunk.data(), chunk.size(), static_cast<off_t>(console_offset_));
  } while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0) return false;
  chunk.resize(static_cast<size_t>(n));
  console_offset_ += static_cast<uint64_t>(n);
  std::string window = console_tail_ + chunk;
  if (window.find(target_.console_marker) != std::string::npos) return true;
  size_t keep = std::min(window.size(), target_.console_marker.size() - 1);
  console_tail_ = window.substr(window.size() - keep);
  return false;
}

bool GuestReadiness::ReadChannel() {
  char buf[1024];
  while (true) {
    ssize_t n = read(channel_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      // QEMU closed it (the process ends): reconnect on the next poll.
      close(channel_fd_);
      channel_fd_ = -1;
      line_.clear();
      line_overlong_ = false;
      return false;
    }
    if (n < 0) return false;  // nothing more for now
    for (ssize_t i = 0; i < n; ++i) {
      char c = buf[i];
      if (c != '\n') {
        if (line_.size() < kMaxLine) {
          line_.push_back(c);
        } else {
          line_overlong_ = true;
        }
        continue;
      }
      absl::string_view line = absl::StripSuffix(line_, "\r");
      bool ready = !line_overlong_ && line == kReadyLine;
      line_.clear();
      line_overlong_ = false;
      if (ready) return true;
    }
  }
}

void GuestReadiness::CloseProbe() {
  if (probe_fd_ >= 0) close(probe_fd_);
  probe_fd_ = -1;
  probe_connected_ = false;
}

std::optional<std::string> GuestReadiness::ProbeStep(absl::Time now) {
  if (target_.probe_host.empty() || target_.probe_port == 0) return std::nullopt;
  if (probe_fd_ < 0) {
    if (now < next_probe_) return std::nullopt;
    next_probe_ = now + kProbeInterval;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(target_.probe_port));
    if (inet_pton(AF_INET, target_.probe_host.c_str(), &addr.sin_addr) != 1) return std::nullopt;
    probe_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe_fd_ < 0) return std::nullopt;
    probe_started_ = now;
    if (connect(probe_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      probe_connected_ = true;
    } else if (errno != EINPROGRESS) {
      CloseProbe();
      return std::nullopt;
    }
  }
  if (now - probe_started_ > kProbeTimeout) {
    CloseProbe();
    return std::nullopt;
  }
  if (!probe_connected_) {
    pollfd p{probe_fd_, POLLOUT, 0};
    if (poll(&p, 1, 0) <= 0) return std::nullopt;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(probe_fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      CloseProbe();
      return std::nullopt;
    }
    probe_connected_ = true;
  }
  // QEMU's user-mode network accepts a forwarded connection for the guest before the guest
  // answers (and holds it open while a booting guest says nothing), so an accepted connection
  // proves nothing: the service must speak first (an SSH or SMTP banner). A byte is enough;
  // it is not looked at.
  short revents = 0;
  if (!Readable(probe_fd_, &revents)) return std::nullopt;
  char byte;
  ssize_t n = recv(probe_fd_, &byte, 1, MSG_DONTWAIT);
  CloseProbe();
  if (n == 1) return absl::StrCat("port ", target_.probe_port, " answered");
  return std::nullopt;  // closed or refused: the guest is not listening yet
}

}  // namespace ppn::host
