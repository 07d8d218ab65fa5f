// End to end on the compose mesh (docker-compose.yml): one container per simulated host on an
// internal network, operated from inside the cloud container as on a real founding node. A lost
// node is a killed container; the fleet is SIGKILLed inside its host and that host restarts it.
// Needs a Docker engine: tools/test starts one, or counts this test as skipped when it cannot.

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "catch2/catch.hpp"
#include "tests/harness/subprocess.h"
#include "tests/mesh/mesh_scenario.h"

namespace ppn::testing {
namespace {

// Not the project and network of `tools/ppn compose up`, so a developer's mesh survives tests.
constexpr char kProject[] = "ppntest";
constexpr char kSubnet[] = "10.250.89";

class ComposeMesh : public Mesh {
 public:
  ComposeMesh() {
    setenv("PPN_COMPOSE_PROJECT", kProject, 1);
    setenv("PPN_SUBNET", kSubnet, 1);
    if (std::getenv("HOME") == nullptr) setenv("HOME", state().c_str(), 1);  // docker's config dir
  }
  ~ComposeMesh() override { Tool({"down"}, absl::Minutes(2)); }

  void KillFleet() override {
    std::string before = FleetPid();
    REQUIRE(!before.empty());
    auto [code, out] = Exec(Compose({"exec", "-T", "cloud", "pkill", "-KILL", "-x", "fleet"}), absl::Minutes(1));
    INFO(out);
    REQUIRE(code == 0);
    // The cloud host's supervisor starts a new fleet a second later.
    REQUIRE(WaitFor(
        [&] {
          std::string now = FleetPid();
          return !now.empty() && now != before && Ppnctl({"node", "list"}).first == 0;
        },
        absl::Seconds(30)));
  }
  void KillNode(const std::string& node) override {
    auto [code, out] = Exec(Compose({"kill", node}), absl::Minutes(1));
    INFO(out);
    REQUIRE(code == 0);
  }
  bool NothingLeft() override {
    std::string label = std::string("label=com.docker.compose.project=") + kProject;
    auto [c1, containers] = Exec({"docker", "ps", "-aq", "--filter", label}, absl::Minutes(1));
    auto [c2, networks] = Exec({"docker", "network", "ls", "-q", "--filter", label}, absl::Minutes(1));
    return c1 == 0 && c2 == 0 && absl::StripAsciiWhitespace(containers).empty() &&
           absl::StripAsciiWhitespace(networks).empty();
  }
  absl::Duration UpTimeout() override { return absl::Minutes(15); }
  std::map<std::string, int> NodeMemoryMib() override {  // docker-compose.yml's mem_limit
    return {{"cloud", 3072}, {"laptop-a", 2048}, {"laptop-b", 1536}};
  }

 protected:
  std::vector<std::string> ToolPrefix() override { return {"compose"}; }
  std::vector<std::string> PpnctlPrefix() override { return Compose({"exec", "-T", "cloud", "ppnctl"}); }
  std::string TokenFile(const std::string& tenant) override { return "/state/tokens/" + tenant + ".token"; }

 private:
  std::vector<std::string> Compose(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {
        "docker-compose", "--project-directory", RunfilePath(""), "-f", RunfilePath("docker-compose.yml"), "-p",
        kProject};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  std::string FleetPid() {
    auto [code, out] = Exec(Compose({"exec", "-T", "cloud", "pgrep", "-x", "fleet"}), absl::Minutes(1));
    return code == 0 ? std::string(absl::StripAsciiWhitespace(out)) : "";
  }
};

TEST_CASE("the compose mesh runs the June 2026 scenario and survives quota, a fleet restart and a lost node",
          "[mesh][qemu][compose]") {
  ComposeMesh mesh;
  RunMeshScenario(mesh);
}

}  // namespace
}  // namespace ppn::testing
