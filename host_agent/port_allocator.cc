#include "host_agent/port_allocator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace ppn::host {
namespace {

// A socket of `type` bound to address:port, or -1 if anything else holds the port.
int BindPort(const std::string& address, uint32_t port, int type) {
  bool v6 = address.find(':') != std::string::npos;
  int fd = socket(v6 ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
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
  if (!ok) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

PortAllocator::PortAllocator(std::string address, uint32_t first, uint32_t last, bool hold_sockets)
    : address_(std::move(address)), first_(first), last_(last), hold_(hold_sockets), next_(first) {}

PortAllocator::~PortAllocator() {
  absl::MutexLock l(&mu_);
  for (auto& [port, held] : used_) CloseLocked(held);
}

void PortAllocator::CloseLocked(Held& h) {
  if (h.tcp >= 0) close(h.tcp);
  if (h.udp >= 0) close(h.udp);
  h = Held{};
}

absl::StatusOr<std::vector<uint32_t>> PortAllocator::Allocate(size_t count) {
  absl::MutexLock l(&mu_);
  std::vector<uint32_t> ports;
  std::vector<Held> held;
  uint32_t span = last_ - first_ + 1;
  // Round-robin from where the last allocation stopped, so a just-freed port is not handed
  // straight to the next VM.
  for (uint32_t tried = 0; tried < span && ports.size() < count; ++tried) {
    uint32_t port = next_;
    next_ = next_ == last_ ? first_ : next_ + 1;
    if (used_.count(port) != 0) continue;
    Held h{BindPort(address_, port, SOCK_STREAM), BindPort(address_, port, SOCK_DGRAM)};
    bool free = h.tcp >= 0 && h.udp >= 0;
    if (!free || !hold_) CloseLocked(h);
    if (!free) continue;
    ports.push_back(port);
    held.push_back(h);
  }
  if (ports.size() < count) {
    for (Held& h : held) CloseLocked(h);
    return absl::ResourceExhaustedError(absl::StrCat("no free host ports: need ", count, " in ", first_, "-", last_,
                                                     " on ", address_, ", ", used_.size(), " in use by VMs"));
  }
  for (size_t i = 0; i < ports.size(); ++i) used_.emplace(ports[i], held[i]);
  return ports;
}

void PortAllocator::Reserve(const std::vector<uint32_t>& ports) {
  absl::MutexLock l(&mu_);
  for (uint32_t port : ports) {
    if (used_.count(port) != 0) continue;
    Held h;
    if (hold_) {
      h = {BindPort(address_, port, SOCK_STREAM), BindPort(address_, port, SOCK_DGRAM)};
      if (h.tcp < 0 || h.udp < 0) {
        spdlog::warn("ports.not_held port={}:{}: something else on the node bound it while the agent was down",
                     address_, port);
      }
    }
    used_.emplace(port, h);
  }
}

void PortAllocator::Release(const std::vector<uint32_t>& ports) {
  absl::MutexLock l(&mu_);
  for (uint32_t p : ports) {
    auto it = used_.find(p);
    if (it == used_.end()) continue;
    CloseLocked(it->second);
    used_.erase(it);
  }
}

void PortAllocator::HandOver(uint32_t port) {
  absl::MutexLock l(&mu_);
  auto it = used_.find(port);
  if (it != used_.end()) CloseLocked(it->second);
}

size_t PortAllocator::in_use() const {
  absl::MutexLock l(&mu_);
  return used_.size();
}

}  // namespace ppn::host
