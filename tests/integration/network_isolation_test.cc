// Per-VM network isolation, proved by a hostile guest: the test guest's probe mode
// (tools/test-guest/init, "#ppn-probe" lines in its user-data) tries targets from inside the VM
// every 2 s and prints what answered. Real QEMU under a real host agent, real namespaces and
// nftables; the "internet" is a namespace of the test's own.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <regex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "common/process.h"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "host_agent/vm_network.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"
#include "tests/harness/host_network_lock.h"
#include "tests/harness/probe_guest.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

// Fixed names and subnets on the host: one copy of this test at a time, across checkouts.
ppn::testing::HostNetworkLock host_network_lock;

using namespace ppn::host::v1;  // NOLINT: test brevity
using ppn::testing::AgentProcess;
using ppn::testing::HttpGet;
using ppn::testing::ReadAll;
using ppn::testing::StartAgent;

CommandRunner Run() { return SpawnerCommandRunner(PosixProcessSpawner::Get()); }

std::chrono::system_clock::time_point Deadline(int seconds = 90) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

// An HTTP server on one thread: answers every request with `body` until destroyed.
class TinyHttp {
 public:
  // Listens on addr:port, inside network namespace `netns` when given.
  TinyHttp(const std::string& addr, uint16_t port, std::string body, const std::string& netns = "")
      : body_(std::move(body)) {
    std::thread make([&] {
      if (!netns.empty()) {
        int ns = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(ns >= 0);
        REQUIRE(setns(ns, CLONE_NEWNET) == 0);
        close(ns);
      }
      fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
      REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
      REQUIRE(listen(fd_, 16) == 0);
    });
    make.join();
    thread_ = std::thread([this] {
      while (true) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        char buf[1024];
        (void)!read(c, buf, sizeof buf);
        std::string resp = absl::StrCat("HTTP/1.0 200 OK\r\nContent-Length: ", body_.size(), "\r\n\r\n", body_);
        (void)!write(c, resp.data(), resp.size());
        close(c);
      }
    });
  }
  ~TinyHttp() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }

 private:
  std::string body_;
  int fd_ = -1;
  std::thread thread_;
};

// The test's "internet": a namespace at 203.0.113.1, routed from the node.
struct Internet {
  Internet() {
    CommandRunner run = Run();
    run({"ip", "netns", "del", "ppnisol-inet"}, "").IgnoreError();
    for (std::vector<std::string> cmd : std::vector<std::vector<std::string>>{
             {"ip", "netns", "add", "ppnisol-inet"},
             {"ip", "link", "add", "ppnisol-i0", "type", "veth", "peer", "name", "eth0", "netns", "ppnisol-inet"},
             {"ip", "addr", "add", "203.0.113.254/24", "dev", "ppnisol-i0"},
             {"ip", "link", "set", "ppnisol-i0", "up"},
             {"ip", "-n", "ppnisol-inet", "addr", "add", "203.0.113.1/24", "dev", "eth0"},
             {"ip", "-n", "ppnisol-inet", "link", "set", "eth0", "up"},
             {"ip", "-n", "ppnisol-inet", "route", "add", "default", "via", "203.0.113.254"}}) {
      absl::StatusOr<std::string> r = run(cmd, "");
      INFO(r.status().message());
      REQUIRE(r.ok());
    }
  }
  ~Internet() {
    Run()({"ip", "link", "del", "ppnisol-i0"}, "").IgnoreError();
    Run()({"ip", "netns", "del", "ppnisol-inet"}, "").IgnoreError();
  }
};

using ppn::testing::ProbeRound;
using ppn::testing::ProbeSpec;

struct Node {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki{"ppn.test"};
  TlsFiles fleet_tls = pki.Issue("fleet", "fleet");
  AgentProcess agent = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a", {"--kvm=off"});
  std::unique_ptr<HostAgent::Stub> stub = HostAgent::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(agent.port), MtlsChannelCredentials(fleet_tls)));

  VmInstance Spawn(const std::string& id, const std::string& tenant, const ppn::types::v1::VmSpec& spec) {
    SpawnVmRequest req;
    req.set_vm_id(id);
    req.set_tenant_id(tenant);
    *req.mutable_spec() = spec;
    SpawnVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = stub->SpawnVm(&ctx, req, &resp);
    INFO(s.error_message() << "\n" << ReadAll(agent.state_dir + "/agent.log"));
    REQUIRE(s.ok());
    return resp.vm();
  }
  grpc::Status UpdateNetwork(const std::string& id, const ppn::types::v1::EgressPolicy& egress) {
    UpdateVmNetworkRequest req;
    req.set_vm_id(id);
    *req.mutable_egress() = egress;
    UpdateVmNetworkResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    return stub->UpdateVmNetwork(&ctx, req, &resp);
  }
  void Destroy(const std::string& id) {
    DestroyVmRequest req;
    req.set_vm_id(id);
    req.mutable_grace_period()->set_seconds(2);
    DestroyVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(stub->DestroyVm(&ctx, req, &resp).ok());
  }
};

// The VM namespaces of the agent keeping its state in `state_dir` (other agents' are not ours).
std::vector<std::string> Namespaces(const std::string& state_dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists("/run/netns")) return out;
  std::string prefix = "ppn." + ppn::host::NetworkScope("laptop-a", state_dir) + ".";
  for (const auto& e : std::filesystem::directory_iterator("/run/netns")) {
    std::string n = e.path().filename();
    if (absl::StartsWith(n, prefix)) out.push_back(n);
  }
  return out;
}

// The node's own non-loopback IPv4 addresses.
std::vector<std::string> NodeAddresses() {
  std::vector<std::string> out;
  std::string json = Run()({"ip", "-4", "-o", "addr"}, "").value_or("");
  std::regex inet("inet ([0-9.]+)/");
  for (auto it = std::sregex_iterator(json.begin(), json.end(), inet); it != std::sregex_iterator(); ++it) {
    std::string a = (*it)[1];
    if (!absl::StartsWith(a, "127.") && !absl::StartsWith(a, "10.213.")) out.push_back(a);
  }
  return out;
}

TEST_CASE("a hostile guest reaches the internet and nothing of the node, the pool or another tenant",
          "[network][qemu][netns]") {
  REQUIRE(geteuid() == 0);  // namespaces and nftables; CI runs as root
  Node n;
  // A service on every address of the node (what a control-plane port is), and on loopback.
  TinyHttp node_service("0.0.0.0", 7198, "node service\n");
  Internet internet;  // made after the agent started: not one of the node's own networks
  TinyHttp web("203.0.113.1", 80, "internet\n", "ppnisol-inet");

  VmInstance other = n.Spawn("vm-other", "globex", ProbeSpec("other", {}));
  int other_port = static_cast<int>(other.forwarded_ports(0).host_port());
  REQUIRE(HttpGet(other_port, "/", absl::Seconds(90)) == "hello from other\n");  // its port works from outside

  std::vector<std::string> probes = {
      "http 203.0.113.1 80",    "tcp 10.0.2.2 7198", absl::StrCat("tcp 10.0.2.2 ", n.agent.port),
      "tcp 169.254.169.254 80", "tcp 10.8.0.1 7101", absl::StrCat("http 10.0.2.2 ", other_port)};
  for (const std::string& a : NodeAddresses()) {
    probes.push_back(absl::StrCat("tcp ", a, " 7198"));
    probes.push_back(absl::StrCat("http ", a, " ", other_port));
  }
  VmInstance vm = n.Spawn("vm-probe", "acme", ProbeSpec("probe", probes));
  int port = static_cast<int>(vm.forwarded_ports(0).host_port());
  CHECK(HttpGet(port, "/", absl::Seconds(90)) == "hello from probe\n");
  std::vector<std::string> ns = Namespaces(n.agent.state_dir);
  CHECK(ns.size() == 2);  // one namespace per VM

  int round = 0;
  std::map<std::string, std::string> seen = ProbeRound(vm.console_log_path(), 0, &round);
  INFO(ReadAll(vm.console_log_path()));
  CHECK(seen["http 203.0.113.1:80"] == "internet");
  for (const auto& [target, answer] : seen) {
    if (target == "http 203.0.113.1:80") continue;
    INFO(target);
    CHECK(answer == "closed");
  }
  CHECK(seen.size() == probes.size());

  SECTION("a live policy change takes effect, and allow and deny lists are honoured") {
    ppn::types::v1::EgressPolicy closed;
    closed.set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
    grpc::Status s = n.UpdateNetwork("vm-probe", closed);
    INFO(s.error_message());
    REQUIRE(s.ok());
    seen = ProbeRound(vm.console_log_path(), round, &round);
    CHECK(seen["http 203.0.113.1:80"] == "closed");
    CHECK(HttpGet(port, "/", absl::Seconds(30)) == "hello from probe\n");  // its own port still reaches it

    ppn::types::v1::EgressPolicy allow_one = closed;
    auto* rule = allow_one.add_allow();
    rule->set_cidr("203.0.113.1");
    rule->set_port_first(80);
    REQUIRE(n.UpdateNetwork("vm-probe", allow_one).ok());
    seen = ProbeRound(vm.console_log_path(), round, &round);
    CHECK(seen["http 203.0.113.1:80"] == "internet");
    CHECK(seen[absl::StrCat("http 10.0.2.2:", other_port)] == "closed");  // never past the denials

    ppn::types::v1::EgressPolicy deny_web;
    deny_web.add_deny()->set_cidr("203.0.113.0/24");
    REQUIRE(n.UpdateNetwork("vm-probe", deny_web).ok());
    seen = ProbeRound(vm.console_log_path(), round, &round);
    CHECK(seen["http 203.0.113.1:80"] == "closed");

    ppn::types::v1::EgressPolicy bad;
    bad.add_allow()->set_cidr("203.0.113.0/40");
    CHECK(n.UpdateNetwork("vm-probe", bad).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(n.UpdateNetwork("vm-nope", deny_web).error_code() == grpc::StatusCode::NOT_FOUND);
  }

  SECTION("traffic is counted per VM in the heartbeat") {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(20));
    auto reader = n.stub->WatchHeartbeats(&ctx, WatchHeartbeatsRequest());
    Heartbeat hb;
    REQUIRE(reader->Read(&hb));
    ctx.TryCancel();
    CHECK(hb.capabilities().network_isolation());
    for (const std::string& w : hb.warnings()) CHECK(absl::StartsWith(w, "no per-VM cgroups"));  // cgroup v1 here
    for (const auto& v : hb.vms()) {
      INFO(v.vm_id());
      CHECK(v.network().tx_bytes() > 0);
      CHECK(v.network().rx_packets() > 0);
    }
  }

  SECTION("destroy, a crashed QEMU and a killed agent leave no namespace, link or claim") {
    n.Destroy("vm-other");
    CHECK(Namespaces(n.agent.state_dir).size() == 1);
    CHECK(HttpGet(other_port, "/", absl::Seconds(3)).empty());
    // The probe's QEMU dies: its record stays (FAILED), its network goes.
    REQUIRE(ppn::testing::KillProcessesMentioning(n.agent.state_dir + "/vms/vm-probe/") == 1);
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!Namespaces(n.agent.state_dir).empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(200));
    INFO("agent:\n" << ReadAll(n.agent.state_dir + "/agent.log"));
    CHECK(Namespaces(n.agent.state_dir).empty());
    // A VM made again, then the agent SIGKILLed and its VM killed meanwhile: the next start sweeps.
    n.Destroy("vm-probe");
    n.Spawn("vm-again", "acme", ProbeSpec("again", {}));
    CHECK(Namespaces(n.agent.state_dir).size() == 1);
    n.agent.process->Signal(SIGKILL);
    n.agent.process->Wait(absl::Seconds(10));
    REQUIRE(ppn::testing::KillProcessesMentioning(n.agent.state_dir + "/vms/vm-again/") == 1);
    absl::SleepFor(absl::Milliseconds(300));
    CHECK(Namespaces(n.agent.state_dir).size() == 1);  // nobody has cleaned up yet
    AgentProcess restarted = StartAgent(n.pki, n.guest.path(), n.guest.catalog(), "laptop-a", {"--kvm=off"});
    CHECK(Namespaces(n.agent.state_dir).empty());
    std::string scope = ppn::host::NetworkScope("laptop-a", n.agent.state_dir);
    for (const auto& claim : std::filesystem::directory_iterator("/run/ppn/links")) {
      CHECK(!absl::StartsWith(ReadAll(claim.path()), scope + " "));  // no link left claimed for it
    }
  }
}

TEST_CASE("an agent that cannot isolate guests says so in every heartbeat when told to run without",
          "[network][qemu]") {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki{"ppn.test"};
  AgentProcess agent = StartAgent(pki, guest.path(), guest.catalog(), "laptop-u", {"--kvm=off", "--network=user"});
  auto stub = HostAgent::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(agent.port),
                                                     MtlsChannelCredentials(pki.Issue("fleet", "fleet"))));
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(20));
  auto reader = stub->WatchHeartbeats(&ctx, WatchHeartbeatsRequest());
  Heartbeat hb;
  REQUIRE(reader->Read(&hb));
  ctx.TryCancel();
  CHECK_FALSE(hb.capabilities().network_isolation());
  int isolation = 0;
  for (const std::string& w : hb.warnings()) isolation += absl::StrContains(w, "no network isolation") ? 1 : 0;
  CHECK(isolation == 1);
}

}  // namespace
}  // namespace ppn
