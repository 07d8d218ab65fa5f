#pragma once

// The end-to-end scenario both meshes must pass (the seeds' June 2026 test through
// `tools/ppn demo`, then quota, tenant isolation, a fleet restart and a lost node, checked with
// ppnctl as an operator would), and what a mesh must offer to run it. LocalMesh drives
// `tools/ppn` (processes on this machine); ComposeMesh drives `tools/ppn compose` (one
// container per simulated host, operated from inside the cloud container).

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace ppn::testing {

class Mesh {
 public:
  Mesh();
  virtual ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  const std::string& state() const { return state_; }
  // tools/ppn with the mesh's subcommand prefix and `args`; {exit code, output}.
  std::pair<int, std::string> Tool(const std::vector<std::string>& args, absl::Duration timeout);
  // ppnctl as the operator, or as `tenant` with that tenant's token file.
  std::pair<int, std::string> Ppnctl(const std::vector<std::string>& args, const std::string& tenant = "");
  // ppnctl ... -o json, required to succeed.
  nlohmann::json Json(std::vector<std::string> args, const std::string& tenant = "");
  bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout);
  std::pair<int, std::string> Exec(const std::vector<std::string>& argv, absl::Duration timeout);

  // The fleet process is SIGKILLed; returns once a new one serves.
  virtual void KillFleet() = 0;
  // `node`'s host agent is lost with its guests (the process, or the whole container).
  virtual void KillNode(const std::string& node) = 0;
  // After `down`: nothing of this mesh is left running.
  virtual bool NothingLeft() = 0;
  // How long `up` may take (the compose mesh may build its image first).
  virtual absl::Duration UpTimeout() = 0;
  // The memory each node offers: set by flag on the local mesh, by the container's memory
  // limit on the compose mesh.
  virtual std::map<std::string, int> NodeMemoryMib() = 0;
  // The nodes the pairing admin appends a node.join for, in ledger order (the founding node
  // joins its own mesh where it runs WireGuard).
  virtual std::vector<std::string> JoinedNodes() = 0;

  // Steps of a mesh's own around the shared scenario: once every node is alive, right after
  // the demo, and before `down`.
  virtual void BeforeDemo() {}
  virtual void AfterDemo() {}
  virtual void BeforeDown() {}

 protected:
  // Arguments of tools/ppn before the command ("compose" for the container mesh).
  virtual std::vector<std::string> ToolPrefix() = 0;
  // The command line that runs ppnctl as this mesh's operator.
  virtual std::vector<std::string> PpnctlPrefix() = 0;
  // Where that ppnctl finds `tenant`'s token file.
  virtual std::string TokenFile(const std::string& tenant) = 0;

 private:
  std::string state_;
};

// Runs the whole scenario against `mesh` with Catch2 assertions, from `up` to `down`.
void RunMeshScenario(Mesh& mesh);

}  // namespace ppn::testing
