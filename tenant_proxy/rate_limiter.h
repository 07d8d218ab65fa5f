#pragma once

// RateLimiter: a token bucket per tenant. Pure C++. Thread-safe. `*clock` must outlive it.

#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace ppn::proxy {

// What Admit decided. `retry_after` is zero when admitted, otherwise how long until the
// bucket holds a whole token again (what a client should wait before retrying).
struct RateDecision {
  bool admitted = true;
  absl::Duration retry_after = absl::ZeroDuration();
};

class RateLimiter {
 public:
  explicit RateLimiter(Clock* clock) : clock_(clock) {}
  // Takes one token from `tenant`'s bucket (refilled at `per_second`, holding at most
  // `burst`, at least 1). `per_second` 0 or less means unlimited.
  RateDecision Admit(const std::string& tenant, double per_second, uint32_t burst);

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
