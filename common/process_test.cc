#include "common/process.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "tests/harness/temp_dir.h"

namespace ppn {
namespace {

SpawnSpec Shell(const std::string& script) {
  SpawnSpec spec;
  spec.argv = {"sh", "-c", script};
  return spec;
}

TEST_CASE("a tool run to completion returns its exit code and its output", "[common][process]") {
  PosixProcessSpawner spawner;
  absl::StatusOr<RunResult> r = spawner.Run(Shell("echo out; echo err >&2; exit 3"), absl::Seconds(10));
  REQUIRE(r.ok());
  CHECK(r->exit_code == 3);
  CHECK_FALSE(r->timed_out);
  CHECK(r->output == "out\nerr\n");
  CHECK(RunTool(&spawner, {"true"}).ok());
  absl::Status failed = RunTool(&spawner, {"sh", "-c", "echo no such disk; exit 1"});
  CHECK(failed.code() == absl::StatusCode::kInternal);
  CHECK(failed.message() == "sh failed: no such disk\n");
}

TEST_CASE("a program that is not installed is refused before anything runs", "[common][process]") {
  PosixProcessSpawner spawner;
  SpawnSpec spec;
  spec.argv = {"ppn-no-such-program", "x"};
  absl::StatusOr<std::unique_ptr<Process>> p = spawner.Spawn(spec);
  CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(p.status().message() == "ppn-no-such-program is not installed (tools/setup)");
  spec.argv = {"/nonexistent/ppn-tool"};
  CHECK(RunTool(&spawner, spec.argv).message() == "/nonexistent/ppn-tool is not installed (tools/setup)");
}

TEST_CASE("a tool that overstays its timeout is killed", "[common][process]") {
  PosixProcessSpawner spawner;
  absl::Time t0 = absl::Now();
  absl::StatusOr<RunResult> r = spawner.Run(Shell("echo started; exec sleep 30"), absl::Milliseconds(300));
  REQUIRE(r.ok());
  CHECK(r->timed_out);
  CHECK(r->exit_code == -1);
  CHECK(r->output == "started\n");
  CHECK(absl::Now() - t0 < absl::Seconds(5));
}

TEST_CASE("a spawned process has a null stdin and its own session and keeps none of our descriptors",
          "[common][process]") {
  testing::TempDir dir;
  int leaked = open(dir.path().c_str(), O_RDONLY | O_DIRECTORY);  // deliberately not O_CLOEXEC
  REQUIRE(leaked > 2);
  PosixProcessSpawner spawner;
  SpawnSpec spec = Shell(absl::StrCat("read line || echo stdin-empty; test -e /proc/$$/fd/", leaked,
                                      " && echo leaked || echo closed; echo $$ $(cut -d' ' -f6 /proc/$$/stat)"));
  spec.output_path = dir.File("out.log");
  spec.new_session = true;
  absl::StatusOr<std::unique_ptr<Process>> p = spawner.Spawn(spec);
  REQUIRE(p.ok());
  REQUIRE((*p)->WaitForExit(absl::Seconds(10)));
  close(leaked);
  std::string out = ReadFile(dir.File("out.log")).value_or("");
  CHECK(absl::StrContains(out, "stdin-empty\nclosed\n"));
  std::string pid = absl::StrCat((*p)->pid());
  CHECK(absl::StrContains(out, absl::StrCat(pid, " ", pid, "\n")));  // session leader
}

TEST_CASE("a process handle follows its process and a signal ends it", "[common][process]") {
  PosixProcessSpawner spawner;
  SpawnSpec spec;
  spec.argv = {"sleep", "30.4711"};
  absl::StatusOr<std::unique_ptr<Process>> p = spawner.Spawn(spec);
  REQUIRE(p.ok());
  CHECK((*p)->Alive());
  CHECK_FALSE((*p)->WaitForExit(absl::Milliseconds(50)));

  SECTION("a process found by listing can be attached") {
    std::vector<ProcessInfo> all = spawner.ListProcesses();
    auto it = std::find_if(all.begin(), all.end(), [&](const ProcessInfo& i) { return i.pid == (*p)->pid(); });
    REQUIRE(it != all.end());
    CHECK(it->argv == std::vector<std::string>{"sleep", "30.4711"});
    absl::StatusOr<std::unique_ptr<Process>> attached = spawner.Attach((*p)->pid());
    REQUIRE(attached.ok());
    CHECK((*attached)->Alive());
    (*attached)->Signal(SIGKILL);
    CHECK((*attached)->WaitForExit(absl::Seconds(5)));
    CHECK_FALSE((*p)->Alive());
    CHECK(spawner.Attach((*p)->pid()).status().code() == absl::StatusCode::kNotFound);
  }
  SECTION("SIGTERM") {
    (*p)->Signal(SIGTERM);
    CHECK((*p)->WaitForExit(absl::Seconds(5)));
    CHECK_FALSE((*p)->Alive());
    (*p)->Signal(SIGKILL);  // already gone: harmless
  }
}

TEST_CASE("a child drops to another user before exec", "[common][process]") {
  if (geteuid() != 0) {
    WARN("not root: cannot test dropping to another user");
    return;
  }
  absl::StatusOr<RunAs> nobody = LookupUser("nobody");
  REQUIRE(nobody.ok());
  PosixProcessSpawner spawner;
  SpawnSpec spec;
  spec.argv = {"sh", "-c", "id -u; id -g"};
  spec.run_as = *nobody;
  absl::StatusOr<RunResult> r = spawner.Run(spec, absl::Seconds(10));
  REQUIRE(r.ok());
  CHECK(r->output == absl::StrCat(nobody->uid, "\n", nobody->gid, "\n"));
  CHECK(LookupUser("ppn-no-such-user").status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a cgroup or output file the child cannot take on fails the spawn", "[common][process]") {
  PosixProcessSpawner spawner;
  SpawnSpec spec;
  spec.argv = {"true"};
  spec.cgroup_dir = "/nonexistent/ppn-cgroup";
  absl::StatusOr<std::unique_ptr<Process>> p = spawner.Spawn(spec);
  CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StartsWith(p.status().message(), "cannot join cgroup /nonexistent/ppn-cgroup: "));
  spec.cgroup_dir.clear();
  spec.output_path = "/nonexistent/dir/out.log";
  p = spawner.Spawn(spec);
  CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StartsWith(p.status().message(), "cannot open /nonexistent/dir/out.log: "));
}

TEST_CASE("a command runs inside a named network namespace and finds the sbin tools", "[common][process][netns]") {
  REQUIRE(geteuid() == 0);  // namespaces need root; CI runs as root
  CommandRunner run = SpawnerCommandRunner(PosixProcessSpawner::Get());
  run({"ip", "netns", "del", "ppntest-proc"}, "").IgnoreError();
  REQUIRE(run({"ip", "netns", "add", "ppntest-proc"}, "").ok());
  absl::StatusOr<std::string> inside = run({"ip", "-o", "link"}, "ppntest-proc");
  REQUIRE(inside.ok());
  CHECK(absl::StrContains(*inside, ": lo:"));
  CHECK(!absl::StrContains(*inside, "eth0"));  // not the node's interfaces
  absl::StatusOr<std::string> failed = run({"ip", "link", "show", "nonexistent0"}, "ppntest-proc");
  CHECK(absl::StartsWith(failed.status().message(), "ip failed: "));
  REQUIRE(run({"ip", "netns", "del", "ppntest-proc"}, "").ok());
  absl::StatusOr<std::string> gone = run({"ip", "-o", "link"}, "ppntest-proc");
  CHECK(gone.status().message() == "cannot open network namespace ppntest-proc: No such file or directory");
}

}  // namespace
}  // namespace ppn
