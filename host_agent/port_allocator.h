#pragma once

// PortAllocator hands out host ports for forwards and migrations from the operator's range,
// skipping ports in use by anything else on the node. Thread-safe.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace ppn::host {

class PortAllocator {
 public:
  // Ports [first, last] on `address`.
  PortAllocator(std::string address, uint32_t first, uint32_t last);

  // `count` free ports, each checked bindable on the address. RESOURCE_EXHAUSTED when the
  // range has too few; nothing is taken then.
  absl::StatusOr<std::vector<uint32_t>> Allocate(size_t count);
  // Marks ports as taken (re-adopted VMs after a restart).
  void Reserve(const std::vector<uint32_t>& ports);
  void Release(const std::vector<uint32_t>& ports);
  size_t in_use() const;

 private:
  const std::string address_;
  const uint32_t first_, last_;
  mutable absl::Mutex mu_;
  std::set<uint32_t> used_ ABSL_GUARDED_BY(mu_);
  uint32_t next_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::host
