#include "tenant_proxy/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace ppn::proxy {

RateDecision RateLimiter::Admit(const std::string& tenant, double per_second, uint32_t burst) {
  if (!(per_second > 0)) return {};
  double cap = std::max<double>(1, burst);
  absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  auto [it, fresh] = buckets_.try_emplace(tenant, Bucket{cap, now});
  Bucket& b = it->second;
  // A clock that steps back must not drain the bucket.
  double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - b.updated));
  b.tokens = std::min(cap, b.tokens + elapsed * per_second);
  b.updated = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return {};
  }
  // Whole milliseconds, rounded up, so a client that waits exactly this long is admitted.
  int64_t wait_ms = static_cast<int64_t>(std::ceil((1 - b.tokens) / per_second * 1000));
  return {false, absl::Milliseconds(std::max<int64_t>(1, wait_ms))};
}

}  // namespace ppn::proxy
