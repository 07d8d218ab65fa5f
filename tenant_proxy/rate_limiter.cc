#include "tenant_proxy/rate_limiter.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ppn::proxy {

absl::Status RateLimiter::Admit(const std::string& tenant, double per_second, uint32_t burst) {
  if (per_second <= 0) return absl::OkStatus();
  double cap = std::max<double>(1, burst);
  absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  auto [it, fresh] = buckets_.try_emplace(tenant, Bucket{cap, now});
  Bucket& b = it->second;
  b.tokens = std::min(cap, b.tokens + absl::ToDoubleSeconds(now - b.updated) * per_second);
  b.updated = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return absl::OkStatus();
  }
  int64_t wait_ms = static_cast<int64_t>(std::ceil((1 - b.tokens) / per_second * 1000));
  return absl::ResourceExhaustedError(
      absl::StrCat("rate limit of ", per_second, " requests/s (burst ", burst, ") reached; retry in ", wait_ms, " ms"));
}

}  // namespace ppn::proxy
