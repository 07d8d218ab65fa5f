// End to end on the one-machine mesh that `tools/ppn up` builds: the laptops join through the
// pairing ceremony, the seeds' June 2026 scenario runs (`tools/ppn demo`), then quota, tenant
// isolation, a lost node and a fleet restart are checked with ppnctl, as an operator would.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "catch2/catch.hpp"
#include "nlohmann/json.hpp"
#include "tests/harness/qemu_harness.h"
#include "tests/harness/subprocess.h"

namespace ppn {
namespace {

using ppn::testing::ReadAll;
using ppn::testing::RunfilePath;

struct Mesh {
  std::string state;
  Mesh() {
    char tmpl[] = "/tmp/ppnm-XXXXXX";
    state = mkdtemp(tmpl);
    chmod(state.c_str(), 0755);
    setenv("PPN_STATE", state.c_str(), 1);
    setenv("PPN_BIN", RunfilePath("").c_str(), 1);
    setenv("PPN_CA", (state + "/pki/ca.pem").c_str(), 1);
    setenv("PPN_CERT", (state + "/pki/operator.pem").c_str(), 1);
    setenv("PPN_KEY", (state + "/pki/operator.key").c_str(), 1);
  }
  ~Mesh() {
    Run({"down"});
    ppn::testing::KillProcessesMentioning(state + "/");
    std::system(("rm -rf " + state).c_str());
  }
  // Runs tools/ppn with `args`; returns {exit code, output}.
  std::pair<int, std::string> Run(const std::vector<std::string>& args, absl::Duration timeout = absl::Minutes(5)) {
    std::vector<std::string> argv = {"/bin/bash", RunfilePath("tools/ppn")};
    argv.insert(argv.end(), args.begin(), args.end());
    return Exec(argv, timeout);
  }
  std::pair<int, std::string> Ppnctl(const std::vector<std::string>& args, const std::string& token = "") {
    std::vector<std::string> argv = {RunfilePath("tools/ppnctl/ppnctl")};
    argv.insert(argv.end(), args.begin(), args.end());
    if (!token.empty()) argv.push_back("--token_file=" + state + "/tokens/" + token + ".token");
    return Exec(argv, absl::Minutes(2));
  }
  std::pair<int, std::string> Exec(const std::vector<std::string>& argv, absl::Duration timeout) {
    std::string out = state + "/cmd.out";
    std::remove(out.c_str());
    ppn::testing::Subprocess p(argv, out);
    int status = p.Wait(timeout);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadAll(out)};
  }
  nlohmann::json Json(const std::vector<std::string>& args, const std::string& token = "") {
    std::vector<std::string> a = args;
    a.push_back("-o");
    a.push_back("json");
    auto [code, out] = Ppnctl(a, token);
    INFO(out);
    REQUIRE(code == 0);
    return nlohmann::json::parse(out);
  }
  bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout) {
    absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(250));
    }
    return false;
  }
};

TEST_CASE("the local mesh runs the June 2026 scenario and survives quota, a lost node and a fleet restart",
          "[mesh][qemu]") {
  Mesh mesh;
  auto [up_code, up] = mesh.Run({"up"});
  INFO(up);
  REQUIRE(up_code == 0);
  CHECK(up.find("laptop-a: pairing code") != std::string::npos);
  CHECK(up.find("spiffe_id: \"spiffe://ppn.local/host/laptop-b\"") != std::string::npos);

  auto alive = [&] {
    auto nodes = mesh.Json({"node", "list"});
    int n = 0;
    for (const auto& node : nodes["nodes"]) n += node["state"] == "NODE_STATE_ALIVE";
    return n == 3;
  };
  REQUIRE(mesh.WaitFor(alive, absl::Seconds(30)));

  auto [demo_code, demo] = mesh.Run({"demo"});
  INFO(demo);
  REQUIRE(demo_code == 0);
  CHECK(demo.find("the fleet placed it on laptop-a") != std::string::npos);  // most free memory, KVM
  CHECK(demo.find("hello from demo-") != std::string::npos);
  CHECK(demo.find("now on laptop-b") != std::string::npos);
  CHECK(demo.find("its disk still holds: written-before-the-move") != std::string::npos);
  CHECK(demo.find("globex's list: 0 VMs") != std::string::npos);
  CHECK(demo.find("NOT_FOUND") != std::string::npos);
  CHECK(demo.find("tenant.vm.destroy") != std::string::npos);
  CHECK(demo.find("OK ") != std::string::npos);

  SECTION("quota, isolation, a lost node and a fleet restart") {
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) {
      auto vm = mesh.Json({"vm", "create", "q" + std::to_string(i), "--spec.memory_mib=96"}, "acme");
      ids.push_back(vm["vm"]["vm_id"]);
    }
    auto [over_code, over] = mesh.Ppnctl({"vm", "create", "q5", "--spec.memory_mib=96"}, "acme");
    CHECK(over_code == 1);
    CHECK(over.find("RESOURCE_EXHAUSTED: VM quota of 5 reached") == 0);
    CHECK(mesh.Json({"vm", "list"}, "acme")["vms"].size() == 5);
    CHECK(mesh.Json({"vm", "list"}, "globex")["vms"].size() == 0);
    auto [other_code, other] = mesh.Ppnctl({"vm", "destroy", "vms/" + ids[0]}, "globex");
    CHECK(other.find("NOT_FOUND") == 0);

    // The fleet is killed and restarted: every tenant sees the same list.
    std::string before = mesh.Json({"vm", "list"}, "acme").dump();
    int fleet_pid = std::atoi(ReadAll(mesh.state + "/run/fleet.pid").c_str());
    REQUIRE(fleet_pid > 0);
    kill(fleet_pid, SIGKILL);
    absl::SleepFor(absl::Milliseconds(300));
    auto [again, again_out] = mesh.Run({"up"});
    INFO(again_out);
    REQUIRE(again == 0);
    REQUIRE(mesh.WaitFor(alive, absl::Seconds(30)));
    nlohmann::json after = mesh.Json({"vm", "list"}, "acme");
    std::vector<std::string> after_ids;
    for (const auto& vm : after["vms"]) after_ids.push_back(vm["vm_id"]);
    CHECK(after_ids == ids);

    // A node is lost: its VMs turn UNKNOWN, never vanish.
    auto vms = mesh.Json({"fleet", "list-vms"});
    std::string lost_node = vms["vms"][0]["node_id"];
    std::string on_it = vms["vms"][0]["vm_id"];
    int agent_pid = std::atoi(ReadAll(mesh.state + "/run/" + lost_node + ".pid").c_str());
    REQUIRE(agent_pid > 0);
    kill(agent_pid, SIGKILL);
    CHECK(mesh.WaitFor([&] {
      return mesh.Json({"fleet", "get-vm", "--vm_id=" + on_it})["vm"]["state"] == "VM_STATE_UNKNOWN";
    }, absl::Seconds(30)));
    CHECK(mesh.Json({"vm", "list"}, "acme")["vms"].size() == 5);
  }

  auto [down_code, down] = mesh.Run({"down"});
  CHECK(down_code == 0);
  CHECK(mesh.WaitFor([&] { return ppn::testing::CountProcessesMentioning(mesh.state + "/") == 0; }, absl::Seconds(15)));
}

}  // namespace
}  // namespace ppn
