#include "host_agent/balloon_controller.h"

#include "catch2/catch.hpp"

namespace ppn::host {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

// A 512 MiB guest at `actual_mib` with `available_mib` available, sampled at `t`.
BalloonReading Reading(uint64_t actual_mib, uint64_t available_mib, absl::Time t, uint64_t major_faults = 0) {
  BalloonReading r;
  r.memory_mib = 512;
  r.actual_mib = actual_mib;
  r.has_stats = true;
  r.available_mib = available_mib;
  r.free_mib = available_mib / 2;
  r.major_faults = major_faults;
  r.stats_time = t;
  return r;
}

TEST_CASE("an idle guest's balloon inflates step by step down to the floor and no further", "[balloon]") {
  BalloonController c;
  // A busybox guest uses about 30 MiB of its 512: nearly everything is available.
  uint64_t actual = 512;
  absl::Time t = kStart;
  std::vector<uint64_t> targets;
  for (int i = 0; i < 10; ++i) {
    BalloonDecision d = c.Decide("vm-1", 0, Reading(actual, actual - 30, t), t);
    if (d.target_mib) {
      CHECK(d.reason == "idle");
      targets.push_back(*d.target_mib);
      actual = *d.target_mib;  // the guest gave it
    }
    t += absl::Seconds(1);
  }
  REQUIRE(!targets.empty());
  CHECK(targets.front() == 512 - 256);  // one step at most
  CHECK(actual == c.FloorMib(512, 0));
  CHECK(actual == 128);  // a quarter of 512
  CHECK(*c.TargetMib("vm-1") == 128);
}

TEST_CASE("inflation keeps the headroom available in the guest", "[balloon]") {
  BalloonController c;
  // The guest uses 300 of its 512 MiB: it may lose what exceeds the 96 MiB headroom.
  BalloonDecision d = c.Decide("vm-1", 0, Reading(512, 212, kStart), kStart);
  REQUIRE(d.target_mib);
  CHECK(*d.target_mib == 512 - (212 - 96));
}

TEST_CASE("a VM's min_memory_mib is its floor", "[balloon]") {
  BalloonController c;
  CHECK(c.FloorMib(512, 400) == 400);
  CHECK(c.FloorMib(512, 9999) == 512);
  CHECK(c.FloorMib(128, 0) == 64);  // never below min_floor_mib
  BalloonDecision d = c.Decide("vm-1", 400, Reading(512, 480, kStart), kStart);
  REQUIRE(d.target_mib);
  CHECK(*d.target_mib == 400);
  d = c.Decide("vm-1", 400, Reading(400, 370, kStart + absl::Seconds(1)), kStart + absl::Seconds(1));
  CHECK_FALSE(d.target_mib);
}

TEST_CASE("a guest whose available memory runs low gets all of it back at once and is left alone a while",
          "[balloon]") {
  BalloonController c;
  REQUIRE(c.Decide("vm-1", 0, Reading(512, 480, kStart), kStart).target_mib == uint64_t{256});
  absl::Time t = kStart + absl::Seconds(1);
  // It allocates: 20 MiB left of its 256.
  BalloonDecision d = c.Decide("vm-1", 0, Reading(256, 20, t), t);
  REQUIRE(d.target_mib);
  CHECK(*d.target_mib == 512);
  CHECK(d.pressure);
  CHECK(d.reason == "low-available");
  // Freed again soon after: no inflation during the quiet period, then inflation again.
  t += absl::Seconds(5);
  d = c.Decide("vm-1", 0, Reading(512, 480, t), t);
  CHECK_FALSE(d.target_mib);
  CHECK(d.reason == "quiet");
  t += c.policy().quiet_after_pressure;
  d = c.Decide("vm-1", 0, Reading(512, 480, t), t);
  CHECK(d.target_mib == uint64_t{256});
}

TEST_CASE("a rising major fault rate deflates the balloon even with memory available", "[balloon]") {
  BalloonController c;
  absl::Time t = kStart;
  REQUIRE(c.Decide("vm-1", 0, Reading(512, 480, t, 1000), t).target_mib == uint64_t{256});
  t += absl::Seconds(1);
  // The same guest sample again (QEMU repeats it until the next poll): no rate from it.
  CHECK_FALSE(c.Decide("vm-1", 0, Reading(256, 200, t - absl::Seconds(1), 1000), t).pressure);
  t += absl::Seconds(2);
  BalloonDecision d = c.Decide("vm-1", 0, Reading(256, 200, t, 1000 + 2 * 500), t);
  REQUIRE(d.target_mib);
  CHECK(*d.target_mib == 512);
  CHECK(d.reason == "major-faults");
}

TEST_CASE("a guest that swaps in gets its memory back", "[balloon]") {
  BalloonController c;
  absl::Time t = kStart;
  REQUIRE(c.Decide("vm-1", 0, Reading(512, 480, t), t).target_mib);
  BalloonReading r = Reading(256, 200, t + absl::Seconds(1));
  r.swap_in_mib = 3;
  BalloonDecision d = c.Decide("vm-1", 0, r, t + absl::Seconds(1));
  CHECK(d.target_mib == uint64_t{512});
  CHECK(d.reason == "swap-in");
}

TEST_CASE("a guest short of headroom gets just enough back", "[balloon]") {
  BalloonController c;
  absl::Time t = kStart;
  // It uses 196 MiB: 96 MiB of headroom are left it.
  REQUIRE(c.Decide("vm-1", 0, Reading(512, 316, t), t).target_mib == uint64_t{292});
  t += absl::Seconds(1);
  // Its use grows slowly (16 MiB/s): above the low mark, below the headroom.
  BalloonDecision d = c.Decide("vm-1", 0, Reading(292, 80, t), t);
  REQUIRE(d.target_mib);
  CHECK(*d.target_mib == 292 + (96 - 80));
  CHECK_FALSE(d.pressure);
}

TEST_CASE("without guest statistics the controller never inflates and gives back what it took", "[balloon]") {
  BalloonController c;
  BalloonReading none;
  none.memory_mib = 512;
  none.actual_mib = 512;
  CHECK_FALSE(c.Decide("vm-1", 0, none, kStart).target_mib);
  REQUIRE(c.Decide("vm-1", 0, Reading(512, 480, kStart), kStart).target_mib);
  none.actual_mib = 256;
  BalloonDecision d = c.Decide("vm-1", 0, none, kStart + absl::Seconds(1));
  CHECK(d.target_mib == uint64_t{512});
  CHECK(d.reason == "no-stats");
}

TEST_CASE("the same target is not sent twice while the balloon is on its way", "[balloon]") {
  BalloonController c;
  REQUIRE(c.Decide("vm-1", 0, Reading(512, 480, kStart), kStart).target_mib == uint64_t{256});
  BalloonDecision d = c.Decide("vm-1", 0, Reading(400, 370, kStart + absl::Seconds(1)), kStart + absl::Seconds(1));
  CHECK_FALSE(d.target_mib);
  CHECK(d.reason == "moving");
  c.Forget("vm-1");
  CHECK_FALSE(c.TargetMib("vm-1"));
}

TEST_CASE("guest statistics are read from QEMU's guest-stats answer", "[balloon]") {
  absl::Time now = kStart + absl::Seconds(2);
  nlohmann::json answer = {{"stats",
                            {{"stat-available-memory", int64_t{400} << 20},
                             {"stat-free-memory", int64_t{350} << 20},
                             {"stat-major-faults", 42},
                             {"stat-swap-in", -1},
                             {"stat-total-memory", int64_t{500} << 20}}},
                           {"last-update", absl::ToUnixSeconds(kStart)}};
  BalloonReading r;
  ParseGuestStats(answer, now, absl::Seconds(5), &r);
  REQUIRE(r.has_stats);
  CHECK(r.available_mib == 400);
  CHECK(r.free_mib == 350);
  CHECK(r.major_faults == 42);
  CHECK(r.swap_in_mib == 0);
  CHECK(r.stats_time == kStart);

  SECTION("stale statistics are not used") {
    ParseGuestStats(answer, kStart + absl::Seconds(30), absl::Seconds(5), &r);
    CHECK_FALSE(r.has_stats);
  }
  SECTION("a driver that has not reported yet gives none") {
    answer["last-update"] = 0;
    ParseGuestStats(answer, now, absl::Seconds(5), &r);
    CHECK_FALSE(r.has_stats);
  }
  SECTION("a guest that does not report available memory gives none") {
    answer["stats"]["stat-available-memory"] = -1;
    ParseGuestStats(answer, now, absl::Seconds(5), &r);
    CHECK_FALSE(r.has_stats);
  }
  SECTION("garbage gives none") {
    ParseGuestStats(nlohmann::json::array(), now, absl::Seconds(5), &r);
    CHECK_FALSE(r.has_stats);
  }
}

TEST_CASE("three quarters of reclaimed memory counts as free", "[balloon]") {
  CHECK(ReclaimedCreditMib(0) == 0);
  CHECK(ReclaimedCreditMib(1024) == 768);
}

}  // namespace
}  // namespace ppn::host

namespace ppn::host {
namespace {

TEST_CASE("a guest whose use grows fast is deflated before its available memory runs out", "[balloon]") {
  BalloonController c;
  absl::Time t = kStart;
  REQUIRE(c.Decide("vm-1", 0, Reading(512, 480, t), t).target_mib == uint64_t{256});
  t += absl::Seconds(1);
  // While the balloon moves, QOM's size is newer than the guest's sample: use is not judged
  // from the two (here they would say the guest's use fell, or rose by 256 MiB).
  BalloonDecision d = c.Decide("vm-1", 0, Reading(256, 480, t - absl::Seconds(1)), t);
  CHECK_FALSE(d.pressure);
  t += absl::Seconds(1);
  d = c.Decide("vm-1", 0, Reading(256, 110, t), t);  // at rest, neither idle nor short
  CHECK_FALSE(d.pressure);
  CHECK_FALSE(d.target_mib);
  t += absl::Seconds(1);
  // Use grew by 20 MiB in a second: the 90 MiB available would be below the low mark (64)
  // within the 3 s horizon.
  d = c.Decide("vm-1", 0, Reading(256, 90, t), t);
  REQUIRE(d.target_mib);
  CHECK(*d.target_mib == 512);
  CHECK(d.reason == "growing");
}

}  // namespace
}  // namespace ppn::host

namespace ppn::host {
namespace {

TEST_CASE("a guest whose use is growing is not inflated even with memory to spare", "[balloon]") {
  BalloonController c;
  absl::Time t = kStart;
  // (Its floor at first is all of it, so the first sample only sets the baseline.)
  CHECK_FALSE(c.Decide("vm-1", 512, Reading(512, 300, t), t).target_mib);
  t += absl::Seconds(1);
  // Use grew by 20 MiB in a second: not pressure (280 MiB are available), but no time to take any.
  BalloonDecision d = c.Decide("vm-1", 0, Reading(512, 280, t), t);
  CHECK_FALSE(d.target_mib);
  CHECK_FALSE(d.pressure);
  CHECK(d.reason == "busy");
  t += absl::Seconds(1);
  // Steady again: the idle memory beyond the headroom goes.
  d = c.Decide("vm-1", 0, Reading(512, 280, t), t);
  CHECK(d.target_mib == uint64_t{512 - (280 - 96)});
}

}  // namespace
}  // namespace ppn::host
