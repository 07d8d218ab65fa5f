#pragma once

// Clock is the only source of time in PPN code, so tests can drive time by hand.

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ppn {

// Clock returns the current time. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};

// RealClock reads the system clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  // A process-wide instance for main.cc to inject; never used by cores directly.
  static Clock* Get() {
    static RealClock clock;
    return &clock;
  }
};

}  // namespace ppn
