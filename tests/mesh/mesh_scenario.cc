#include "tests/mesh/mesh_scenario.h"

#include <sys/stat.h>

#include <cstdlib>
#include <map>

#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "tests/harness/qemu_harness.h"
#include "tests/harness/subprocess.h"

namespace ppn::testing {

Mesh::Mesh() {
  char tmpl[] = "/tmp/ppnm-XXXXXX";
  state_ = mkdtemp(tmpl);
  chmod(state_.c_str(), 0755);
  setenv("PPN_STATE", state_.c_str(), 1);
  setenv("PPN_BIN", RunfilePath("").c_str(), 1);
  setenv("PPN_CA", (state_ + "/pki/ca.pem").c_str(), 1);
  setenv("PPN_CERT", (state_ + "/pki/operator.pem").c_str(), 1);
  setenv("PPN_KEY", (state_ + "/pki/operator.key").c_str(), 1);
}

Mesh::~Mesh() { std::system(("rm -rf " + state_).c_str()); }

std::pair<int, std::string> Mesh::Exec(const std::vector<std::string>& argv, absl::Duration timeout) {
  RunResult r = Run(argv, state_ + "/cmd.out", timeout);
  return {r.exit_code, r.output};
}

std::pair<int, std::string> Mesh::Tool(const std::vector<std::string>& args, absl::Duration timeout) {
  std::vector<std::string> argv = {"/bin/bash", RunfilePath("tools/ppn")};
  for (const std::string& a : ToolPrefix()) argv.push_back(a);
  argv.insert(argv.end(), args.begin(), args.end());
  return Exec(argv, timeout);
}

std::pair<int, std::string> Mesh::Ppnctl(const std::vector<std::string>& args, const std::string& tenant) {
  std::vector<std::string> argv = PpnctlPrefix();
  argv.insert(argv.end(), args.begin(), args.end());
  if (!tenant.empty()) argv.push_back("--token_file=" + TokenFile(tenant));
  return Exec(argv, absl::Minutes(2));
}

nlohmann::json Mesh::Json(std::vector<std::string> args, const std::string& tenant) {
  args.push_back("-o");
  args.push_back("json");
  auto [code, out] = Ppnctl(args, tenant);
  INFO(out);
  REQUIRE(code == 0);
  return nlohmann::json::parse(out);
}

bool Mesh::WaitFor(const std::function<bool()>& pred, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(250));
  }
  return false;
}

void RunMeshScenario(Mesh& mesh) {
  auto [up_code, up] = mesh.Tool({"up"}, mesh.UpTimeout());
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
  // The pool as the seeds describe it: the cloud node without KVM, the laptops with it
  // (simulated here: their guests run under TCG, and the heartbeat says so).
  std::map<std::string, int> memory;
  std::map<std::string, std::string> kvm;
  nlohmann::json pool = mesh.Json({"node", "list"});
  for (const auto& node : pool["nodes"]) {
    memory[node["node_id"]] = std::stoi(node["total_memory_mib"].get<std::string>());
    kvm[node["node_id"]] = node["kvm"];
  }
  CHECK(memory == mesh.NodeMemoryMib());
  CHECK(kvm == std::map<std::string, std::string>{{"cloud", "KVM_SUPPORT_NONE"},
                                                  {"laptop-a", "KVM_SUPPORT_SIMULATED"},
                                                  {"laptop-b", "KVM_SUPPORT_SIMULATED"}});

  mesh.BeforeDemo();
  auto [demo_code, demo] = mesh.Tool({"demo"}, absl::Minutes(5));
  INFO(demo);
  REQUIRE(demo_code == 0);
  mesh.AfterDemo();
  CHECK(demo.find("the fleet placed it on laptop-a") != std::string::npos);  // most free memory, KVM
  CHECK(demo.find("hello from demo-") != std::string::npos);
  CHECK(demo.find("now on laptop-b") != std::string::npos);
  CHECK(demo.find("its disk still holds: written-before-the-move") != std::string::npos);
  // The tenant is given the relay's address (the founding node's, port 30000 of tools/ports'
  // relay-public range), never a laptop's, and the same address answers after the move.
  const std::string given = "The tenant is given the relay's address ";
  size_t relay_at = demo.find(given);
  REQUIRE(relay_at != std::string::npos);
  std::string relay_address =
      demo.substr(relay_at + given.size(), demo.find(' ', relay_at + given.size()) - relay_at - given.size());
  CHECK(relay_address.substr(relay_address.rfind(':') + 1) == "30000");
  CHECK(demo.find("the tenant's address is still " + relay_address + " and answers") != std::string::npos);
  CHECK(demo.find("globex's list: 0 VMs") != std::string::npos);
  CHECK(demo.find("NOT_FOUND") != std::string::npos);
  CHECK(demo.find("tenant.vm.destroy") != std::string::npos);
  CHECK(demo.find("OK ") != std::string::npos);
  // The narration matches the ledger. Each writer appends in its own order (the services
  // deliver through their own spools, so writers interleave freely): the pairing admin the two
  // joins; the tenant proxy acme's create and destroy, each an intent and then its outcome; the
  // fleet the VM's creation and destruction; the scheduler the move from laptop-a to laptop-b.
  size_t at = demo.find("created vm-");
  REQUIRE(at != std::string::npos);
  std::string vm = demo.substr(at + 8, demo.find(';', at) - at - 8);
  auto entries = mesh.Json({"ledger", "get-entries"})["entries"];
  std::map<std::string, std::vector<std::string>> by_writer;
  nlohmann::json migrate;
  for (const auto& e : entries) {
    std::string actor = e["actor"];
    std::string role = actor.substr(0, actor.rfind('/'));
    role = role.substr(role.rfind('/') + 1);
    by_writer[role].push_back(std::string(e["kind"]) + " " + std::string(e["subject"]) + " " +
                              std::string(e["outcome"]));
    if (e["kind"] == "vm.migrate") migrate = e;
    if (e["kind"] == "tenant.vm.create") CHECK(e["tenant_id"] == "acme");
  }
  std::vector<std::string> joins;
  for (const std::string& node : mesh.JoinedNodes()) joins.push_back("node.join " + node + " OUTCOME_SUCCESS");
  CHECK(by_writer["pairing-admin"] == joins);
  CHECK(by_writer["tenant-proxy"] == std::vector<std::string>{"tenant.vm.create  OUTCOME_PENDING",
                                                              "tenant.vm.create " + vm + " OUTCOME_SUCCESS",
                                                              "tenant.vm.destroy " + vm + " OUTCOME_PENDING",
                                                              "tenant.vm.destroy " + vm + " OUTCOME_SUCCESS"});
  CHECK(by_writer["fleet"] ==
        std::vector<std::string>{"vm.create " + vm + " OUTCOME_SUCCESS", "vm.destroy " + vm + " OUTCOME_SUCCESS"});
  CHECK(by_writer["scheduler"] == std::vector<std::string>{"vm.migrate " + vm + " OUTCOME_SUCCESS"});
  CHECK(by_writer.size() == 4);
  CHECK(migrate["attributes"]["source"] == "laptop-a");
  CHECK(migrate["attributes"]["target"] == "laptop-b");

  SECTION("quota, isolation, a fleet restart and a lost node") {
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
    mesh.KillFleet();
    REQUIRE(mesh.WaitFor(alive, absl::Seconds(30)));
    nlohmann::json after = mesh.Json({"vm", "list"}, "acme");
    std::vector<std::string> after_ids;
    for (const auto& vm : after["vms"]) after_ids.push_back(vm["vm_id"]);
    CHECK(after_ids == ids);

    // A laptop is lost: its VMs turn UNKNOWN, never vanish.
    std::string lost_node, on_it;
    nlohmann::json all = mesh.Json({"fleet", "list-vms"});
    for (const auto& vm : all["vms"]) {
      if (std::string(vm["node_id"]).rfind("laptop-", 0) == 0) {
        lost_node = vm["node_id"];
        on_it = vm["vm_id"];
        break;
      }
    }
    REQUIRE(!lost_node.empty());
    mesh.KillNode(lost_node);
    CHECK(mesh.WaitFor(
        [&] {
          return mesh.Json({"fleet", "get-vm", "--vm_id=" + on_it})["vm"]["state"] == "VM_STATE_UNKNOWN";
        },
        absl::Seconds(30)));
    CHECK(mesh.Json({"vm", "list"}, "acme")["vms"].size() == 5);
  }

  mesh.BeforeDown();
  auto [down_code, down] = mesh.Tool({"down"}, absl::Minutes(2));
  INFO(down);
  CHECK(down_code == 0);
  CHECK(mesh.WaitFor([&] { return mesh.NothingLeft(); }, absl::Seconds(15)));
}

}  // namespace ppn::testing
