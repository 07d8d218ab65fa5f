#pragma once

// PortAllocator hands out host ports for forwards and migrations from the operator's range,
// skipping ports in use by anything else on the node. Thread-safe.
//
// With per-VM network namespaces nothing binds a forwarded port on the node itself (the
// forward is a DNAT rule), so nothing else would notice the port is taken: a service or a
// second agent on the same address could bind it and be shadowed by, or shadow, the VM. In
// that mode (`hold_sockets`) the allocator keeps a bound TCP and UDP socket on every port it
// handed out, until it is released or handed over to whoever binds it for real.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace ppn::host {

class PortAllocator {
 public:
  // Ports [first, last] on `address`.
  PortAllocator(std::string address, uint32_t first, uint32_t last, bool hold_sockets = false);
  ~PortAllocator();
  PortAllocator(const PortAllocator&) = delete;
  PortAllocator& operator=(const PortAllocator&) = delete;

  // `count` free ports, each checked bindable (TCP and UDP) on the address. RESOURCE_EXHAUSTED
  // when the range has too few; nothing is taken then.
  absl::StatusOr<std::vector<uint32_t>> Allocate(size_t count);
  // Marks ports as taken (re-adopted VMs after a restart), held again where they can be.
  void Reserve(const std::vector<uint32_t>& ports);
  void Release(const std::vector<uint32_t>& ports);
  // Stops holding `port` (still taken) so the caller can bind it itself.
  void HandOver(uint32_t port);
  size_t in_use() const;

 private:
  struct Held {
    int tcp = -1, udp = -1;
  };
  void CloseLocked(Held& h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string address_;
  const uint32_t first_, last_;
  const bool hold_;
  mutable absl::Mutex mu_;
  std::map<uint32_t, Held> used_ ABSL_GUARDED_BY(mu_);
  uint32_t next_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::host
