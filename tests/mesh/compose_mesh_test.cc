// End to end on the compose mesh (docker-compose.yml): one container per simulated host on an
// internal network, operated from inside the cloud container as on a real founding node. A lost
// node is a killed container; the fleet is SIGKILLed inside its host and that host restarts it.
// Every host runs WireGuard: the network is captured from this machine (tcpdump on the bridge)
// during the whole demo, and only WireGuard may pass between the hosts; at the end a node is
// revoked and must lose its tunnels within 2 s.
// Needs a Docker engine: tools/test starts one, or counts this test as skipped when it cannot.
// PPN_COMPOSE_PROJECT and PPN_SUBNET (--test_env) choose the project and network, so runs of
// several people on one machine do not collide.

#include <signal.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "tests/harness/subprocess.h"
#include "tests/mesh/mesh_scenario.h"
#include "tests/mesh/wire_check.h"

namespace ppn::testing {
namespace {

// Not the project and network of `tools/ppn compose up`, so a developer's mesh survives tests.
constexpr char kProject[] = "ppntest";
constexpr char kSubnet[] = "10.250.89";
constexpr uint16_t kWireGuardPort = 51820;
constexpr char kInterface[] = "ppn-wg";

std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

absl::Time ParseRfc3339(const std::string& s) {
  absl::Time t;
  std::string err;
  return absl::ParseTime(absl::RFC3339_full, s, &t, &err) ? t : absl::InfinitePast();
}

class ComposeMesh : public Mesh {
 public:
  ComposeMesh() : project_(EnvOr("PPN_COMPOSE_PROJECT", kProject)), subnet_(EnvOr("PPN_SUBNET", kSubnet)) {
    setenv("PPN_COMPOSE_PROJECT", project_.c_str(), 1);
    setenv("PPN_SUBNET", subnet_.c_str(), 1);
    if (std::getenv("HOME") == nullptr) setenv("HOME", state().c_str(), 1);  // docker's config dir
  }
  ~ComposeMesh() override {
    capture_.reset();
    Tool({"down"}, absl::Minutes(2));
  }

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
    lost_ = node;
  }
  bool NothingLeft() override {
    std::string label = "label=com.docker.compose.project=" + project_;
    auto [c1, containers] = Exec({"docker", "ps", "-aq", "--filter", label}, absl::Minutes(1));
    auto [c2, networks] = Exec({"docker", "network", "ls", "-q", "--filter", label}, absl::Minutes(1));
    return c1 == 0 && c2 == 0 && absl::StripAsciiWhitespace(containers).empty() &&
           absl::StripAsciiWhitespace(networks).empty();
  }
  absl::Duration UpTimeout() override { return absl::Minutes(15); }
  std::map<std::string, int> NodeMemoryMib() override {  // docker-compose.yml's mem_limit
    return {{"cloud", 3072}, {"laptop-a", 2048}, {"laptop-b", 1536}};
  }
  std::vector<std::string> JoinedNodes() override { return {"cloud", "laptop-a", "laptop-b"}; }

  // Every node's tunnel is up with both other nodes as peers; then the capture starts.
  void BeforeDemo() override {
    CHECK(WaitFor([&] { return TunnelsUp({"cloud", "laptop-a", "laptop-b"}); }, absl::Seconds(60)));
    auto [code, table] = Ppnctl({"node", "list"});
    INFO(table);
    CHECK(code == 0);
    CHECK(table.find("MESH_ADDRESS  TUNNEL  HANDSHAKE") != std::string::npos);
    CHECK(table.find("10.8.0.1      up") != std::string::npos);
    auto [bridge_code, id] =
        Exec({"docker", "network", "inspect", "-f", "{{.Id}}", project_ + "_mesh"}, absl::Minutes(1));
    REQUIRE(bridge_code == 0);
    std::string bridge = "br-" + std::string(absl::StripAsciiWhitespace(id)).substr(0, 12);
    capture_file_ = state() + "/bridge.pcap";
    // 128 bytes of each frame: every header, and the WireGuard message's own.
    capture_ = std::make_unique<Subprocess>(
        std::vector<std::string>{"tcpdump", "-i", bridge, "-n", "-s", "128", "-U", "-w", capture_file_},
        state() + "/tcpdump.log");
    REQUIRE(WaitFor([&] { return ReadAll(state() + "/tcpdump.log").find("listening on") != std::string::npos; },
                    absl::Seconds(10)));
  }

  // Between the nodes' addresses only WireGuard passed while the demo created, reached,
  // migrated and destroyed a VM; no node but the founding one listens outside the mesh.
  void AfterDemo() override {
    REQUIRE(capture_ != nullptr);
    absl::SleepFor(absl::Milliseconds(500));  // what was in flight
    capture_->Signal(SIGINT);
    CHECK(capture_->Wait(absl::Seconds(10)) != -1);
    capture_.reset();
    absl::StatusOr<WireReport> r =
        CheckWire(capture_file_, {subnet_ + ".10", subnet_ + ".11", subnet_ + ".12"}, kWireGuardPort);
    INFO(r.status().message());
    REQUIRE(r.ok());
    INFO(absl::StrJoin(r->first, "\n"));
    CHECK(r->violations == 0);
    // Heartbeats, the guest's HTTP and the live migration (the guest's memory and disk).
    CHECK(r->wireguard > 1000);
    CHECK(r->wireguard_bytes > (4u << 20));
    std::printf("wire: %llu frames, %llu between nodes, %llu WireGuard messages (%llu MiB), %llu violations\n",
                static_cast<unsigned long long>(r->frames), static_cast<unsigned long long>(r->between_nodes),
                static_cast<unsigned long long>(r->wireguard),
                static_cast<unsigned long long>(r->wireguard_bytes >> 20),
                static_cast<unsigned long long>(r->violations));
    // Prometheus on the founding node scraped every service, the laptops' agents over the mesh,
    // and saw what the demo did: the tenant's create, the migration, VMs in the fleet.
    CHECK(WaitFor([&] { return PromValue("count(up{job=\"laptops\"} == 1)") == 2; }, absl::Seconds(30)));
    CHECK(WaitFor([&] { return PromValue("count(up{job=\"cloud\"} == 1)") == 7; }, absl::Seconds(30)));
    CHECK(WaitFor(
        [&] {
          return PromValue(
                     "sum(grpc_server_handled_total{grpc_service=\"ppn.tenancy.v1.TenantService\","
                     "grpc_method=\"CreateVm\",grpc_code=\"OK\"})") >= 1;
        },
        absl::Seconds(30)));
    CHECK(WaitFor([&] { return PromValue("sum(ppn_scheduler_migrations_total{outcome=\"success\"})") >= 1; },
                  absl::Seconds(30)));
    CHECK(WaitFor([&] { return PromValue("max(ppn_ledger_entries)") >= 5; }, absl::Seconds(30)));
    for (const std::string& laptop : {"laptop-a", "laptop-b"}) {
      auto [code, sockets] = In(laptop, "ss -H -ltnu");
      REQUIRE(code == 0);
      for (absl::string_view line : absl::StrSplit(sockets, '\n', absl::SkipEmpty())) {
        std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
        REQUIRE(f.size() >= 5);
        const std::string& local = f[4];
        bool inside = local.rfind("10.8.0.", 0) == 0 || local.rfind("127.", 0) == 0;
        bool wireguard = f[0] == "udp" && absl::EndsWith(local, ":" + std::to_string(kWireGuardPort));
        INFO(laptop << " listens on " << line);
        CHECK((inside || wireguard));
      }
    }
  }

  // The lost node's container comes back (its tunnel from its grant); then the other laptop
  // is revoked as the pairing admin would, and within 2 s both its peers drop it and it can
  // no longer call the control plane.
  void BeforeDown() override {
    std::string victim = "laptop-b", peer = "laptop-a";
    if (!lost_.empty()) {
      auto [code, out] = Exec(Compose({"start", lost_}), absl::Minutes(2));
      INFO(out);
      REQUIRE(code == 0);
      REQUIRE(WaitFor([&] { return TunnelsUp({"cloud", "laptop-a", "laptop-b"}); }, absl::Seconds(120)));
      auto [wg_code, peers] = In(lost_, std::string("wg show ") + kInterface + " peers | wc -l");
      CHECK(absl::StripAsciiWhitespace(peers) == "2");
      peer = lost_;
      victim = lost_ == "laptop-a" ? "laptop-b" : "laptop-a";
    }
    std::string key;
    nlohmann::json joins = Json({"ledger", "get-entries", "--kind=node.join"});  // kept: the loop reads into it
    for (const auto& e : joins["entries"]) {
      if (e["kind"] == "node.join" && e["subject"] == victim) key = e["attributes"]["wireguard_public_key"];
    }
    INFO(joins.dump());
    REQUIRE(!key.empty());
    const std::string ledger_call =
        "ppnctl ledger get-checkpoint --endpoint=10.8.0.1:7101 --ca=/state/node/ca.pem --cert=/state/node/node.pem "
        "--key=/state/node/node.key --timeout=2s";
    REQUIRE(In(victim, ledger_call).first == 0);

    // A watcher on each peer prints when the key leaves its interface.
    std::map<std::string, std::unique_ptr<Subprocess>> watchers;
    for (const std::string& node : {std::string("cloud"), peer}) {
      std::string script = absl::StrCat("echo watching; while wg show ", kInterface, " peers | grep -qF '", key,
                                        "'; do sleep 0.01; done; date +%s.%N");
      watchers[node] = std::make_unique<Subprocess>(Compose({"exec", "-T", node, "timeout", "20", "sh", "-c", script}),
                                                    state() + "/watch-" + node + ".log");
    }
    REQUIRE(WaitFor(
        [&] {
          for (const auto& [node, _] : watchers) {
            if (ReadAll(state() + "/watch-" + node + ".log").find("watching") == std::string::npos) return false;
          }
          return true;
        },
        absl::Seconds(30)));
    nlohmann::json appended =
        Json({"ledger", "append", "--kind=node.revoke", "--subject=" + victim, "--outcome=OUTCOME_SUCCESS",
              "--cert=/state/pki/pairing-admin.pem", "--key=/state/pki/pairing-admin.key"});
    absl::Time at = ParseRfc3339(appended["append_time"]);
    REQUIRE(at != absl::InfinitePast());
    for (auto& [node, w] : watchers) {
      CHECK(w->Wait(absl::Seconds(25)) != -1);
      std::string out = ReadAll(state() + "/watch-" + node + ".log");
      double gone = 0;
      std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
      REQUIRE(lines.size() == 2);
      REQUIRE(absl::SimpleAtod(lines[1], &gone));
      absl::Duration latency = absl::Seconds(gone) - (at - absl::UnixEpoch());
      INFO(node << " dropped " << victim << " after " << absl::FormatDuration(latency));
      CHECK(latency < absl::Seconds(2));
      std::printf("revoke: %s dropped %s %s after the ledger took the entry\n", node.c_str(), victim.c_str(),
                  absl::FormatDuration(latency).c_str());
    }
    // Its calls to the control plane have no tunnel to go through (and never leave in clear).
    auto [after_code, after] = In(victim, ledger_call);
    INFO(after);
    CHECK(after_code != 0);
    CHECK(WaitFor(
        [&] {
          nlohmann::json nodes = Json({"node", "list"});
          for (const auto& n : nodes["nodes"]) {
            if (n["node_id"] == victim) return n["state"] == "NODE_STATE_REVOKED";
          }
          return false;
        },
        absl::Seconds(10)));
  }

 protected:
  std::vector<std::string> ToolPrefix() override { return {"compose"}; }
  std::vector<std::string> PpnctlPrefix() override { return Compose({"exec", "-T", "cloud", "ppnctl"}); }
  std::string TokenFile(const std::string& tenant) override { return "/state/tokens/" + tenant + ".token"; }

 private:
  std::vector<std::string> Compose(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {
        "docker-compose", "--project-directory", RunfilePath(""), "-f", RunfilePath("docker-compose.yml"), "-p",
        project_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  std::pair<int, std::string> In(const std::string& node, const std::string& script) {
    return Exec(Compose({"exec", "-T", node, "sh", "-c", script}), absl::Minutes(1));
  }
  // The value of a PromQL expression on the founding node's Prometheus; -1 if it has none.
  double PromValue(const std::string& query) {
    auto [code, out] = Exec(Compose({"exec", "-T", "cloud", "curl", "-sf", "--get", "--data-urlencode",
                                     "query=" + query, "http://127.0.0.1:9090/api/v1/query"}),
                            absl::Minutes(1));
    INFO(query << " -> " << out);
    if (code != 0) return -1;
    nlohmann::json j = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || j["status"] != "success" || j["data"]["result"].empty()) return -1;
    const auto& value = j["data"]["result"][0]["value"];
    if (!value.is_array() || value.size() != 2 || !value[1].is_string()) return -1;
    double v = -1;
    return absl::SimpleAtod(value[1].get<std::string>(), &v) ? v : -1;
  }
  std::string FleetPid() {
    auto [code, out] = Exec(Compose({"exec", "-T", "cloud", "pgrep", "-x", "fleet"}), absl::Minutes(1));
    return code == 0 ? std::string(absl::StripAsciiWhitespace(out)) : "";
  }
  // The fleet shows each of `nodes` alive with its tunnel up and a peer for every other node.
  bool TunnelsUp(const std::vector<std::string>& nodes) {
    auto [code, out] = Ppnctl({"node", "list", "-o", "json"});
    if (code != 0) return false;
    nlohmann::json list = nlohmann::json::parse(out, nullptr, false);
    if (!list.is_object()) return false;
    size_t up = 0;
    for (const auto& n : list["nodes"]) {
      if (std::find(nodes.begin(), nodes.end(), n["node_id"]) == nodes.end()) continue;
      if (n["state"] != "NODE_STATE_ALIVE" || !n.contains("mesh")) return false;
      const auto& m = n["mesh"];
      if (!m.value("tunnel_up", false) || m.value("peers", nlohmann::json::array()).size() != nodes.size() - 1) {
        return false;
      }
      ++up;
    }
    return up == nodes.size();
  }

  const std::string project_, subnet_;
  std::string lost_;
  std::string capture_file_;
  std::unique_ptr<Subprocess> capture_;
};

TEST_CASE(
    "the compose mesh runs the June 2026 scenario inside WireGuard and survives quota, a fleet restart, a "
    "lost node and a revocation",
    "[mesh][qemu][compose]") {
  ComposeMesh mesh;
  RunMeshScenario(mesh);
}

}  // namespace
}  // namespace ppn::testing
