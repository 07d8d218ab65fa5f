#include "host_agent/node_probe.h"

#include <sys/stat.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::string dir = path.substr(0, path.rfind('/'));
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') mkdir(dir.substr(0, i).c_str(), 0755);
  }
  std::ofstream(path) << text;
}

constexpr char kMeminfo[] = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n";

TEST_CASE("memory is the machine's when no cgroup limits it") {
  ppn::testing::TempDir t;
  Write(t.File("proc/meminfo"), kMeminfo);
  Write(t.File("proc/self/cgroup"), "0::/user.slice\n");
  Write(t.File("cg/user.slice/memory.max"), "max\n");
  MemoryInfo m = ReadMemoryInfo(t.File("proc"), t.File("cg"));
  CHECK(m.total_mib == 23437);
  CHECK(m.available_mib == 19531);
}

TEST_CASE("a cgroup v2 memory limit (a container) caps what the node offers") {
  ppn::testing::TempDir t;
  Write(t.File("proc/meminfo"), kMeminfo);
  // Inside a container the mount root is the container's own cgroup.
  Write(t.File("proc/self/cgroup"), "0::/\n");
  Write(t.File("cg/memory.max"), std::to_string(2048ull << 20) + "\n");
  Write(t.File("cg/memory.current"), std::to_string(512ull << 20) + "\n");
  MemoryInfo m = ReadMemoryInfo(t.File("proc"), t.File("cg"));
  CHECK(m.total_mib == 2048);
  CHECK(m.available_mib == 1536);
}

TEST_CASE("a cgroup v1 memory limit counts, at its path or at the mount root") {
  ppn::testing::TempDir t;
  Write(t.File("proc/meminfo"), kMeminfo);
  Write(t.File("proc/self/cgroup"), "12:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n");
  SECTION("a container: only the root of the memory mount exists") {
    Write(t.File("cg/memory/memory.limit_in_bytes"), std::to_string(1536ull << 20));
    Write(t.File("cg/memory/memory.usage_in_bytes"), std::to_string(36ull << 20));
    MemoryInfo m = ReadMemoryInfo(t.File("proc"), t.File("cg"));
    CHECK(m.total_mib == 1536);
    CHECK(m.available_mib == 1500);
  }
  SECTION("a host: the unlimited root and a limited child; the child wins") {
    Write(t.File("cg/memory/memory.limit_in_bytes"), "9223372036854771712");
    Write(t.File("cg/memory/docker/abc/memory.limit_in_bytes"), std::to_string(1024ull << 20));
    Write(t.File("cg/memory/docker/abc/memory.usage_in_bytes"), std::to_string(2048ull << 20));
    MemoryInfo m = ReadMemoryInfo(t.File("proc"), t.File("cg"));
    CHECK(m.total_mib == 1024);
    CHECK(m.available_mib == 0);  // usage over the limit (page cache) is nothing left, not a wrap
  }
}

TEST_CASE("the QEMU user must be able to enter every parent of the state directory", "[host_agent][node_probe]") {
  if (geteuid() != 0) {
    WARN("not root: QEMU runs as the agent's own user, nothing to check");
    return;
  }
  char tmpl[] = "/tmp/ppn-access-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string top = tmpl;
  std::string state = top + "/locked/state/vms";
  std::filesystem::create_directories(state);
  chmod(top.c_str(), 0755);
  chmod((top + "/locked").c_str(), 0700);
  PosixProcessSpawner spawner;
  RunAs nobody = LookupUser("nobody").value();
  absl::Status s = CheckQemuUserAccess(&spawner, nobody, state);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.message() == "QEMU runs as nobody, which cannot enter " + top +
                           "/locked (mode 0700): every directory above the state directory " + state +
                           " must be searchable by it (chmod o+x " + top + "/locked, or choose another --state_dir)");
  chmod((top + "/locked").c_str(), 0711);
  CHECK(CheckQemuUserAccess(&spawner, nobody, state).ok());
  CHECK_FALSE(std::filesystem::exists(state + "/.qemu-access-probe"));
  std::filesystem::remove_all(top);
}

}  // namespace
}  // namespace ppn::host
