#include "tenant_proxy/rate_limiter.h"

#include "catch2/catch.hpp"
#include "tests/fakes/fake_clock.h"

namespace ppn::proxy {
namespace {

TEST_CASE("the rate limiter admits a burst then says how long to wait", "[proxy][rate]") {
  testing::FakeClock clock;
  RateLimiter limiter(&clock);
  CHECK(limiter.Admit("acme", 1, 2).admitted);
  CHECK(limiter.Admit("acme", 1, 2).admitted);
  RateDecision refused = limiter.Admit("acme", 1, 2);
  CHECK_FALSE(refused.admitted);
  CHECK(refused.retry_after == absl::Seconds(1));
  clock.Advance(absl::Milliseconds(250));
  refused = limiter.Admit("acme", 1, 2);
  CHECK_FALSE(refused.admitted);
  CHECK(refused.retry_after == absl::Milliseconds(750));
  clock.Advance(absl::Milliseconds(750));
  CHECK(limiter.Admit("acme", 1, 2).admitted);
}

TEST_CASE("the rate limiter keeps one bucket per tenant", "[proxy][rate]") {
  testing::FakeClock clock;
  RateLimiter limiter(&clock);
  CHECK(limiter.Admit("acme", 1, 1).admitted);
  CHECK_FALSE(limiter.Admit("acme", 1, 1).admitted);
  CHECK(limiter.Admit("globex", 1, 1).admitted);
}

TEST_CASE("a rate of zero is unlimited and a burst of zero still admits one", "[proxy][rate]") {
  testing::FakeClock clock;
  RateLimiter limiter(&clock);
  for (int i = 0; i < 1000; ++i) REQUIRE(limiter.Admit("acme", 0, 0).admitted);
  CHECK(limiter.Admit("slow", 10, 0).admitted);
  RateDecision refused = limiter.Admit("slow", 10, 0);
  CHECK_FALSE(refused.admitted);
  CHECK(refused.retry_after == absl::Milliseconds(100));
}

TEST_CASE("a fast refill never asks for less than a millisecond", "[proxy][rate]") {
  testing::FakeClock clock;
  RateLimiter limiter(&clock);
  CHECK(limiter.Admit("acme", 1e6, 1).admitted);
  RateDecision refused = limiter.Admit("acme", 1e6, 1);
  CHECK_FALSE(refused.admitted);
  CHECK(refused.retry_after == absl::Milliseconds(1));
}

}  // namespace
}  // namespace ppn::proxy
