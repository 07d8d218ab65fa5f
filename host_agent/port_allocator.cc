#include "host_agent/port_allocator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace ppn::host {
namespace {

// True if nothing else listens on (or holds) the TCP port.
bool Bindable(const std::string& address, uint32_t port) {
  bool v6 = address.find(':') != std::string::npos;
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok;
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    ok = inet_pton(AF_INET6, address.c_str(), &a.sin6_addr) == 1 &&
         bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ok = inet_pton(AF_INET, address.c_str(), &a.sin_addr) == 1 &&
         bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  close(fd);
  return ok;
}

}  // namespace

PortAllocator::PortAllocator(std::string address, uint32_t first, uint32_t last)
    : address_(std::move(address)), first_(first), last_(last), next_(first) {}

absl::StatusOr<std::vector<uint32_t>> PortAllocator::Allocate(size_t count) {
  absl::MutexLock l(&mu_);
  std::vector<uint32_t> out;
  uint32_t span = last_ - first_ + 1;
  // Round-robin from where the last allocation stopped, so a just-freed port is not handed
  // straight to the next VM.
  for (uint32_t tried = 0; tried < span && out.size() < count; ++tried) {
    uint32_t port = next_;
    next_ = next_ == last_ ? first_ : next_ + 1;
    if (used_.count(port) == 0 && Bindable(address_, port)) out.push_back(port);
  }
  if (out.size() < count) {
    return absl::ResourceExhaustedError(absl::StrCat("no free host ports: need ", count, " in ", first_, "-", last_,
                                                     " on ", address_, ", ", used_.size(), " in use by VMs"));
  }
  used_.insert(out.begin(), out.end());
  return out;
}

void PortAllocator::Reserve(const std::vector<uint32_t>& ports) {
  absl::MutexLock l(&mu_);
  used_.insert(ports.begin(), ports.end());
}

void PortAllocator::Release(const std::vector<uint32_t>& ports) {
  absl::MutexLock l(&mu_);
  for (uint32_t p : ports) used_.erase(p);
}

size_t PortAllocator::in_use() const {
  absl::MutexLock l(&mu_);
  return used_.size();
}

}  // namespace ppn::host
