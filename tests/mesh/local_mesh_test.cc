// End to end on the one-machine mesh that `tools/ppn up` builds: services are processes here,
// a lost node is a SIGKILLed host agent, and the fleet comes back through `tools/ppn up`.

#include <signal.h>

#include <cstdlib>

#include "catch2/catch.hpp"
#include "tests/harness/qemu_harness.h"
#include "tests/harness/subprocess.h"
#include "tests/mesh/mesh_scenario.h"

namespace ppn::testing {
namespace {

class LocalMesh : public Mesh {
 public:
  ~LocalMesh() override {
    Tool({"down"}, absl::Minutes(2));
    KillProcessesMentioning(state() + "/");
  }
  void KillFleet() override {
    Kill("fleet");
    absl::SleepFor(absl::Milliseconds(300));
    auto [code, out] = Tool({"up"}, absl::Minutes(5));
    INFO(out);
    REQUIRE(code == 0);
  }
  void KillNode(const std::string& node) override { Kill(node); }
  bool NothingLeft() override { return CountProcessesMentioning(state() + "/") == 0; }
  absl::Duration UpTimeout() override { return absl::Minutes(5); }
  std::map<std::string, int> NodeMemoryMib() override {  // tools/ppn's --advertised_memory_mib
    return {{"cloud", 2048}, {"laptop-a", 4096}, {"laptop-b", 3072}};
  }
  std::vector<std::string> JoinedNodes() override { return {"laptop-a", "laptop-b"}; }  // the cloud runs no tunnel

 protected:
  std::vector<std::string> ToolPrefix() override { return {}; }
  std::vector<std::string> PpnctlPrefix() override { return {RunfilePath("tools/ppnctl/ppnctl")}; }
  std::string TokenFile(const std::string& tenant) override { return state() + "/tokens/" + tenant + ".token"; }

 private:
  void Kill(const std::string& service) {
    int pid = std::atoi(ReadAll(state() + "/run/" + service + ".pid").c_str());
    REQUIRE(pid > 0);
    kill(pid, SIGKILL);
  }
};

TEST_CASE("the local mesh runs the June 2026 scenario and survives quota, a fleet restart and a lost node",
          "[mesh][qemu]") {
  LocalMesh mesh;
  RunMeshScenario(mesh);
}

}  // namespace
}  // namespace ppn::testing
