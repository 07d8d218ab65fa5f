#pragma once

// RateLimiter: a token bucket per tenant. Thread-safe. `*clock` must outlive it.

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"

namespace ppn::proxy {

class RateLimiter {
 public:
  explicit RateLimiter(Clock* clock) : clock_(clock) {}
  // Takes one token from `tenant`'s bucket (refilled at `per_second`, holding at most
  // `burst`). RESOURCE_EXHAUSTED saying when to retry if empty; `per_second` 0 means
  // unlimited.
  absl::Status Admit(const std::string& tenant, double per_second, uint32_t burst);

 private:
  struct Bucket {
    double tokens;
    absl::Time updated;
  };
  Clock* const clock_;
  absl::Mutex mu_;
  std::map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::proxy
