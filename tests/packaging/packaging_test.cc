// The packaged path end to end (tests/packaging/packaging_test.sh): tools/package's .debs
// installed with dpkg -i into fresh containers (systemd as PID 1), `ppn init`, `ppn join` and
// its approval, a VM on the joined node through the tenant API, the refusals of a second init
// and of a join to a wrong address, and an upgrade of ppn-node under a running VM. Needs a
// Docker engine: tools/test starts one, or counts this test as skipped when it cannot.
// PPN_PKG_PROJECT and PPN_PKG_SUBNET (--test_env) choose the containers' names and network.

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "tests/harness/subprocess.h"

namespace ppn::testing {
namespace {

TEST_CASE("The packages found a mesh, join a second machine that takes a VM, and upgrade under it",
          "[compose][mesh][qemu]") {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string work = std::string(tmp != nullptr ? tmp : "/tmp") + "/packaging";
  // Docker's client keeps its config under $HOME, which Bazel's test environment may leave unset.
  if (std::getenv("HOME") == nullptr) setenv("HOME", work.c_str(), 1);
  RunResult r = Run({"/bin/bash", RunfilePath("tests/packaging/packaging_test.sh"), RunfilePath(""), work},
                    work + ".log", absl::Minutes(25));
  std::printf("%s\n", r.output.c_str());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
}

}  // namespace
}  // namespace ppn::testing
