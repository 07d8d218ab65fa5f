#include "host_agent/private_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "tests/harness/host_network_lock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

// Fixed scopes and subnets: never beside another checkout's run of this test.
ppn::testing::HostNetworkLock host_network_lock;

// Runs argv, in `netns` when set (through `ip netns exec`), capturing its output.
absl::StatusOr<std::string> RunForTest(const std::vector<std::string>& argv, const std::string& netns) {
  std::vector<std::string> full = argv;
  if (!netns.empty()) full.insert(full.begin(), {"ip", "netns", "exec", netns});
  int fds[2];
  // Close-on-exec: a daemon it starts (wireguard-go) must not hold the pipe open for good.
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    std::vector<char*> args;
    for (auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, n);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return absl::InternalError(absl::StrCat(full[0], ": ", out));
  return out;
}

void Must(const std::vector<std::string>& argv) {
  absl::StatusOr<std::string> r = RunForTest(argv, "");
  INFO(absl::StrJoin(argv, " ") << ": " << r.status().message());
  REQUIRE(r.ok());
}

// Runs `fn` on a thread that has entered network namespace `netns`.
template <typename Fn>
auto InNamespace(const std::string& netns, Fn fn) {
  decltype(fn()) result{};
  std::thread t([&] {
    if (!netns.empty()) {  // empty: the node's own
      int fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
      REQUIRE(fd >= 0);
      REQUIRE(setns(fd, CLONE_NEWNET) == 0);
      close(fd);
    }
    result = fn();
  });
  t.join();
  return result;
}

sockaddr_in Addr(const std::string& addr, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
  return a;
}

// Serves `reply` per connection, in `netns`, until destroyed.
struct Server {
  int fd = -1;
  std::thread thread;
  Server(const std::string& netns, const std::string& addr, uint16_t port, const std::string& reply) {
    fd = InNamespace(netns, [&] {
      int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a = Addr(addr, port);
      REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
      REQUIRE(listen(s, 16) == 0);
      return s;
    });
    thread = std::thread([this, reply] {
      while (true) {
        int c = accept(fd, nullptr, nullptr);
        if (c < 0) return;
        timeval tv{5, 0};  // a reader that gets nothing gives up; so does this writer
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        (void)!write(c, reply.data(), reply.size());
        close(c);
      }
    });
  }
  ~Server() {
    shutdown(fd, SHUT_RDWR);
    close(fd);
    thread.join();
  }
};

// What a connection from `netns` to addr:port reads within 2 s, or "" if it fails.
std::string Fetch(const std::string& netns, const std::string& addr, uint16_t port) {
  return InNamespace(netns, [&] {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a = Addr(addr, port);
    std::string out;
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      char buf[64];
      ssize_t n = read(s, buf, sizeof buf);
      if (n > 0) out.assign(buf, n);
    }
    close(s);
    return out;
  });
}

// How many bytes a connection from `netns` to addr:port reads to its end (5 s without progress
// ends it).
size_t FetchAll(const std::string& netns, const std::string& addr, uint16_t port) {
  return InNamespace(netns, [&] {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a = Addr(addr, port);
    size_t total = 0;
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      char buf[65536];
      ssize_t n;
      while ((n = read(s, buf, sizeof buf)) > 0) total += n;
    }
    close(s);
    return total;
  });
}

constexpr char kScope[] = "privtest-0000";

// Stand-ins for VM namespaces: the guest's end of the private NIC is played by an address on
// the VM namespace's own bridge pb0 (the tap has no reader without QEMU).
struct Fixture {
  std::vector<std::string> vms;
  explicit Fixture(std::vector<std::string> ids) : vms(std::move(ids)) {
    RemovePrivateNetworkScope(kScope, RunForTest);
    for (const std::string& vm : vms) {
      RunForTest({"ip", "netns", "del", Ns(vm)}, "").IgnoreError();
      Must({"ip", "netns", "add", Ns(vm)});
      Must({"ip", "-n", Ns(vm), "link", "set", "lo", "up"});
    }
  }
  ~Fixture() {
    for (const std::string& vm : vms) RunForTest({"ip", "netns", "del", Ns(vm)}, "").IgnoreError();
    RemovePrivateNetworkScope(kScope, RunForTest);
  }
  static std::string Ns(const std::string& vm) { return absl::StrCat("ppn.", kScope, ".", vm); }
  static void Guest(const std::string& vm, const std::string& address) {
    Must({"ip", "-n", Ns(vm), "addr", "add", address + "/24", "dev", "pb0"});
  }
};

PrivateNic Nic(const std::string& net, const std::string& address) { return {net, address, 24, ""}; }

TEST_CASE("VMs on one private network reach each other and a VM on another does not", "[host_agent][private_network]") {
  Fixture f({"vm-a1", "vm-a2", "vm-b1"});
  PrivateNetworks nets(kScope, RunForTest);
  REQUIRE(nets.Attach("vm-a1", Fixture::Ns("vm-a1"), {Nic("net-a", "10.214.0.2")}, "nobody").ok());
  REQUIRE(nets.Attach("vm-a2", Fixture::Ns("vm-a2"), {Nic("net-a", "10.214.0.3")}, "nobody").ok());
  // Tenant B's network lies in the same numbers on purpose: only a shared bridge connects.
  REQUIRE(nets.Attach("vm-b1", Fixture::Ns("vm-b1"), {Nic("net-b", "10.214.0.4")}, "nobody").ok());
  Fixture::Guest("vm-a1", "10.214.0.2");
  Fixture::Guest("vm-a2", "10.214.0.3");
  Fixture::Guest("vm-b1", "10.214.0.4");
  CHECK(nets.ListRouters() == std::vector<std::string>{nets.RouterNamespace("net-a"), nets.RouterNamespace("net-b")});
  CHECK(nets.RouterPorts("net-a").size() == 2);

  Server server(Fixture::Ns("vm-a2"), "0.0.0.0", 7000, "private hello\n");
  CHECK(Fetch(Fixture::Ns("vm-a1"), "10.214.0.3", 7000) == "private hello\n");
  CHECK(Fetch(Fixture::Ns("vm-b1"), "10.214.0.3", 7000).empty());
  // The tap belongs to QEMU's user; the VM namespace routes nothing of it.
  std::string tap = RunForTest({"ip", "-n", Fixture::Ns("vm-a1"), "-d", "link", "show", "pt0"}, "").value_or("");
  CHECK(absl::StrContains(tap, "tap"));
  CHECK(RunForTest({"ip", "-n", Fixture::Ns("vm-a1"), "-4", "addr", "show", "dev", "pe0"}, "").value_or("x").empty());
  // The router has no address and no route.
  std::string routes = RunForTest({"ip", "-n", nets.RouterNamespace("net-a"), "-4", "route", "show"}, "").value_or("x");
  CHECK(routes.empty());

  nets.Detach("vm-a1", {Nic("net-a", "10.214.0.2")});
  CHECK(nets.RouterPorts("net-a").size() == 1);
  CHECK(nets.ListRouters().size() == 2);
  nets.Detach("vm-a2", {Nic("net-a", "10.214.0.3")});
  nets.Detach("vm-b1", {Nic("net-b", "10.214.0.4")});
  CHECK(nets.ListRouters().empty());
  nets.Detach("vm-b1", {Nic("net-b", "10.214.0.4")});  // again: nothing left, no error
}

TEST_CASE("the start sweep removes routers no live VM uses and ports of VMs that are gone",
          "[host_agent][private_network]") {
  Fixture f({"vm-c1", "vm-c2", "vm-d1"});
  PrivateNetworks nets(kScope, RunForTest);
  REQUIRE(nets.Attach("vm-c1", Fixture::Ns("vm-c1"), {Nic("net-c", "10.214.1.2")}, "nobody").ok());
  REQUIRE(nets.Attach("vm-c2", Fixture::Ns("vm-c2"), {Nic("net-c", "10.214.1.3")}, "nobody").ok());
  REQUIRE(nets.Attach("vm-d1", Fixture::Ns("vm-d1"), {Nic("net-d", "10.214.2.2")}, "nobody").ok());
  std::vector<std::string> removed = nets.Sweep({{"net-c", {"vm-c2"}}});
  CHECK(removed.size() == 2);
  CHECK(nets.ListRouters() == std::vector<std::string>{nets.RouterNamespace("net-c")});
  CHECK(nets.RouterPorts("net-c") == std::vector<std::string>{nets.RouterPort("vm-c2", "net-c")});
  RemovePrivateNetworkScope(kScope, RunForTest);
  CHECK(nets.ListRouters().empty());
}

TEST_CASE("a failed attach leaves no router behind", "[host_agent][private_network]") {
  Fixture f({});
  PrivateNetworks nets(kScope, RunForTest);
  absl::Status s = nets.Attach("vm-x", Fixture::Ns("vm-x"), {Nic("net-x", "10.214.3.2")}, "");  // no such namespace
  CHECK(!s.ok());
  CHECK(absl::StrContains(s.message(), "cannot attach vm vm-x to private network net-x"));
  CHECK(nets.ListRouters().empty());
}

// Whether any process runs wireguard-go for `interface_name`.
bool TunnelProcessRuns(const std::string& interface_name) {
  return RunForTest({"pgrep", "-f", "wireguard-go " + interface_name}, "").ok();
}

// Two agents' routers of one network, joined by their tunnels with endpoints on `mesh`.
void CheckTunnelBetweenScopes(const std::string& mesh) {
  constexpr char kOther[] = "privtest-1111";
  Fixture f({"vm-e1", "vm-x1"});
  // The second agent's VM namespace.
  std::string e2 = absl::StrCat("ppn.", kOther, ".vm-e2");
  RemovePrivateNetworkScope(kOther, RunForTest);
  RunForTest({"ip", "netns", "del", e2}, "").IgnoreError();
  Must({"ip", "netns", "add", e2});
  Must({"ip", "-n", e2, "link", "set", "lo", "up"});
  ppn::testing::TempDir keys;
  PrivateNetworks here(kScope, RunForTest), there(kOther, RunForTest);
  REQUIRE(here.Attach("vm-e1", Fixture::Ns("vm-e1"), {Nic("net-e", "10.214.6.2")}, "").ok());
  REQUIRE(there.Attach("vm-e2", e2, {Nic("net-e", "10.214.6.3")}, "").ok());
  // Another tenant's VM on the first node, in the same numbers on a network of its own.
  REQUIRE(here.Attach("vm-x1", Fixture::Ns("vm-x1"), {Nic("net-x", "10.214.6.4")}, "").ok());
  Fixture::Guest("vm-e1", "10.214.6.2");
  Must({"ip", "-n", e2, "addr", "add", "10.214.6.3/24", "dev", "pb0"});
  Fixture::Guest("vm-x1", "10.214.6.4");

  TunnelOptions o1{keys.File("a"), 52100, "wireguard-go", mesh};
  TunnelOptions o2{keys.File("b"), 52100, "wireguard-go", mesh};
  absl::StatusOr<NetworkTunnel> t1 = here.Tunnel("net-e", "10.214.6.0/24", o1);
  INFO(t1.status().message());
  REQUIRE(t1.ok());
  absl::StatusOr<NetworkTunnel> t2 = there.Tunnel("net-e", "10.214.6.0/24", o2);
  INFO(t2.status().message());
  REQUIRE(t2.ok());
  CHECK(t1->public_key != t2->public_key);  // each node's own key
  CHECK(t1->endpoint != t2->endpoint);
  CHECK(here.Tunnel("net-e", "10.214.6.0/24", o1)->endpoint == t1->endpoint);  // idempotent
  CHECK(here.Tunnel("net-nope", "10.214.9.0/24", o1).status().code() == absl::StatusCode::kFailedPrecondition);
  if (!absl::StartsWith(mesh, "127.")) {
    // Between machines the endpoint is the node's mesh address; the node forwards its port.
    CHECK(absl::StartsWith(t1->endpoint, mesh + ":"));
    CHECK(absl::StrContains(RunForTest({"nft", "list", "table", "ip", "ppnt_privtest_0000"}, "").value_or(""),
                            t1->endpoint.substr(t1->endpoint.find(':') + 1)));
  }

  Server server(e2, "0.0.0.0", 7000, "across nodes\n");
  CHECK(Fetch(Fixture::Ns("vm-e1"), "10.214.6.3", 7000).empty());  // no peers yet
  REQUIRE(here.SetPeers("net-e", {{t2->public_key, t2->endpoint, {"10.214.6.3"}}}).ok());
  REQUIRE(there.SetPeers("net-e", {{t1->public_key, t1->endpoint, {"10.214.6.2"}}}).ok());
  std::string got;
  for (int i = 0; i < 10 && got.empty(); ++i) got = Fetch(Fixture::Ns("vm-e1"), "10.214.6.3", 7000);
  CHECK(got == "across nodes\n");
  {
    // Full-sized segments too: guests think their link carries 1500 bytes, the tunnel less.
    Server bulk(e2, "0.0.0.0", 7001, std::string(4 << 20, 'b'));
    CHECK(FetchAll(Fixture::Ns("vm-e1"), "10.214.6.3", 7001) == (4u << 20));
  }
  CHECK(Fetch(Fixture::Ns("vm-x1"), "10.214.6.3", 7000).empty());  // another network: no way there
  // The router forwards nothing to its uplink: the node behind it is out of a guest's reach.
  Must({"ip", "-n", Fixture::Ns("vm-e1"), "route", "add", "default", "dev", "pb0"});
  Server node_service(std::string(), "0.0.0.0", 7002, "node\n");
  in_addr up;
  REQUIRE(inet_pton(AF_INET, t1->endpoint.substr(0, t1->endpoint.find(':')).c_str(), &up) == 1);
  up.s_addr = htonl(ntohl(up.s_addr) - 1);  // the node's end of the uplink's /30
  char host_ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &up, host_ip, sizeof host_ip);
  CHECK(Fetch(Fixture::Ns("vm-e1"), host_ip, 7002).empty());
  CHECK(Fetch(Fixture::Ns("vm-e1"), "10.215.255.254", 7002).empty());
  CHECK(here.SetPeers("net-e", {{"not-a-key", t2->endpoint, {"10.214.6.3"}}}).code() ==
        absl::StatusCode::kInvalidArgument);
  // A peer that leaves takes its routes along.
  REQUIRE(here.SetPeers("net-e", {}).ok());
  CHECK(Fetch(Fixture::Ns("vm-e1"), "10.214.6.3", 7000).empty());

  std::string wg1 = here.TunnelInterface("net-e"), wg2 = there.TunnelInterface("net-e");
  CHECK(TunnelProcessRuns(wg1));
  here.Detach("vm-e1", {Nic("net-e", "10.214.6.2")});
  CHECK(!TunnelProcessRuns(wg1));  // its router went, and its wireguard-go with it
  CHECK(here.ListRouters() == std::vector<std::string>{here.RouterNamespace("net-x")});
  RemovePrivateNetworkScope(kOther, RunForTest);
  CHECK(!TunnelProcessRuns(wg2));
  CHECK(there.ListRouters().empty());
  CHECK(!RunForTest({"nft", "list", "table", "ip", "ppnt_privtest_1111"}, "").ok());  // its forwards went too
  for (const std::string& scope : {std::string(kScope), std::string(kOther)}) {
    for (const auto& claim : std::filesystem::directory_iterator("/run/ppn/uplinks")) {
      CHECK(ReadFile(claim.path()).value_or("").rfind(scope + " ", 0) != 0);  // no uplink left claimed
    }
  }
  std::string links = RunForTest({"ip", "-o", "link", "show"}, "").value_or("");
  CHECK(links.find(absl::StrCat("pu", wg1.substr(2))) == std::string::npos);  // no uplink left on the node
  CHECK(links.find(absl::StrCat("pu", wg2.substr(2))) == std::string::npos);
  RunForTest({"ip", "netns", "del", e2}, "").IgnoreError();
}

TEST_CASE("routers of one network on two agents reach each other over their tunnel and nothing else does",
          "[host_agent][private_network][wireguard]") {
  CheckTunnelBetweenScopes("127.0.0.1");
}

TEST_CASE("with a mesh address of the node, tunnels reach each other through the node's forward of their ports",
          "[host_agent][private_network][wireguard]") {
  // The node's first non-loopback address stands for its mesh address (as between machines).
  std::string text = RunForTest({"ip", "-4", "-o", "addr", "show", "scope", "global"}, "").value_or("");
  size_t at = text.find("inet ");
  REQUIRE(at != std::string::npos);
  std::string address = text.substr(at + 5, text.find('/', at) - at - 5);
  INFO(address);
  CheckTunnelBetweenScopes(address);
}

// The MAC the kernel of namespace `netns` holds for `address` ("" if none).
std::string NeighbourMac(const std::string& netns, const std::string& address) {
  std::string text = RunForTest({"ip", "-n", netns, "neigh", "show", address}, "").value_or("");
  size_t at = text.find("lladdr ");
  return at == std::string::npos ? "" : text.substr(at + 7, 17);
}

// How long until a connection from `netns` to addr:7000 reads `want` (attempts of up to 2 s
// each, for at most 60 s); 60 s or more when it never does.
absl::Duration TimeUntilAnswer(const std::string& netns, const std::string& addr, const std::string& want) {
  absl::Time start = absl::Now();
  while (absl::Now() - start < absl::Seconds(60)) {
    if (Fetch(netns, addr, 7000) == want) return absl::Now() - start;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::Seconds(60);
}

// Two agents' routers of network net-m (10.214.7.0/24) with their tunnels between them.
struct TwoNodes {
  static constexpr char kOther[] = "privtest-1111";
  ppn::testing::TempDir keys;
  PrivateNetworks here{kScope, RunForTest}, there{kOther, RunForTest};
  NetworkTunnel t1, t2;
  std::vector<std::string> other_namespaces;
  TwoNodes() { RemovePrivateNetworkScope(kOther, RunForTest); }
  ~TwoNodes() {
    for (const std::string& ns : other_namespaces) RunForTest({"ip", "netns", "del", ns}, "").IgnoreError();
    RemovePrivateNetworkScope(kOther, RunForTest);
  }
  // A VM namespace of the second agent with a guest at `address` on its private NIC.
  std::string OtherVm(const std::string& vm, const std::string& address) {
    std::string ns = absl::StrCat("ppn.", kOther, ".", vm);
    RunForTest({"ip", "netns", "del", ns}, "").IgnoreError();
    Must({"ip", "netns", "add", ns});
    Must({"ip", "-n", ns, "link", "set", "lo", "up"});
    other_namespaces.push_back(ns);
    REQUIRE(there.Attach(vm, ns, {Nic("net-m", address)}, "").ok());
    Must({"ip", "-n", ns, "addr", "add", address + "/24", "dev", "pb0"});
    return ns;
  }
  void MakeTunnels() {
    absl::StatusOr<NetworkTunnel> a = here.Tunnel("net-m", "10.214.7.0/24", {keys.File("a"), 52100});
    absl::StatusOr<NetworkTunnel> b = there.Tunnel("net-m", "10.214.7.0/24", {keys.File("b"), 52100});
    INFO(a.status().message() << " / " << b.status().message());
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    t1 = *a;
    t2 = *b;
  }
};

TEST_CASE("a guest's ARP entry for a peer that left its node is corrected at once by the router",
          "[host_agent][private_network][wireguard][arp]") {
  Fixture f({"vm-g", "vm-p"});
  TwoNodes nodes;
  REQUIRE(nodes.here.Attach("vm-g", Fixture::Ns("vm-g"), {Nic("net-m", "10.214.7.2")}, "").ok());
  REQUIRE(nodes.here.Attach("vm-p", Fixture::Ns("vm-p"), {Nic("net-m", "10.214.7.3")}, "").ok());
  Fixture::Guest("vm-g", "10.214.7.2");
  Fixture::Guest("vm-p", "10.214.7.3");
  // The peer's copy on the other node (a migration's target), not yet where the fleet says it is.
  std::string moved = nodes.OtherVm("vm-p", "10.214.7.3");
  nodes.MakeTunnels();
  // Every node's router of the network has the same MAC: entries for remote peers never go stale.
  for (const std::string& ns : {nodes.here.RouterNamespace("net-m"), nodes.there.RouterNamespace("net-m")}) {
    std::string br = RunForTest({"ip", "-n", ns, "link", "show", "br0"}, "").value_or("");
    CHECK(absl::StrContains(br, PrivateNetworks::RouterMac("net-m")));
  }
  REQUIRE(nodes.there.SetPeers("net-m", {{nodes.t1.public_key, nodes.t1.endpoint, {"10.214.7.2"}}}).ok());
  REQUIRE(nodes.here.SetPeers("net-m", {{nodes.t2.public_key, nodes.t2.endpoint, {}}}).ok());
  Server there_server(moved, "0.0.0.0", 7000, "moved\n");
  {
    Server beside(Fixture::Ns("vm-p"), "0.0.0.0", 7000, "beside\n");
    REQUIRE(Fetch(Fixture::Ns("vm-g"), "10.214.7.3", 7000) == "beside\n");
  }
  std::string peer_mac = NeighbourMac(Fixture::Ns("vm-g"), "10.214.7.3");
  CHECK(!peer_mac.empty());
  CHECK(peer_mac != PrivateNetworks::RouterMac("net-m"));  // the peer's own, beside it on the bridge
  // The peer leaves for the other node; the fleet then routes its address through the tunnel.
  nodes.here.Detach("vm-p", {Nic("net-m", "10.214.7.3")});
  Must({"ip", "netns", "del", Fixture::Ns("vm-p")});
  REQUIRE(nodes.here.SetPeers("net-m", {{nodes.t2.public_key, nodes.t2.endpoint, {"10.214.7.3"}}}).ok());
  CHECK(NeighbourMac(Fixture::Ns("vm-g"), "10.214.7.3") == PrivateNetworks::RouterMac("net-m"));
  absl::Duration gap = TimeUntilAnswer(Fixture::Ns("vm-g"), "10.214.7.3", "moved\n");
  INFO("traffic resumed after " << absl::FormatDuration(gap));
  CHECK(gap < absl::Seconds(2));
}

TEST_CASE("a migrated guest reaches the peers it left behind as soon as it runs on its new node",
          "[host_agent][private_network][wireguard][arp]") {
  Fixture f({"vm-g", "vm-p"});
  TwoNodes nodes;
  REQUIRE(nodes.here.Attach("vm-p", Fixture::Ns("vm-p"), {Nic("net-m", "10.214.7.3")}, "").ok());
  Fixture::Guest("vm-p", "10.214.7.3");
  nodes.OtherVm("vm-q", "10.214.7.4");  // the other node's router exists before the guest arrives
  nodes.MakeTunnels();
  // The migrating guest is one kernel across the move (its ARP cache comes along): a bridge of
  // its own with one port on each node's router, the one on the target not yet connected.
  const std::string g = Fixture::Ns("vm-g"), r1 = nodes.here.RouterNamespace("net-m"),
                    r2 = nodes.there.RouterNamespace("net-m");
  Must({"ip", "-n", g, "link", "add", "gb", "address", "02:00:00:00:07:02", "type", "bridge"});
  Must({"ip", "-n", g, "link", "add", "gh", "type", "veth", "peer", "name", "vgh", "netns", r1});
  Must({"ip", "-n", g, "link", "add", "gt", "type", "veth", "peer", "name", "vgt", "netns", r2});
  for (const char* port : {"gh", "gt"}) Must({"ip", "-n", g, "link", "set", port, "master", "gb", "up"});
  Must({"ip", "-n", g, "link", "set", "gb", "up"});
  Must({"ip", "-n", g, "addr", "add", "10.214.7.2/24", "dev", "gb"});
  Must({"ip", "-n", r1, "link", "set", "vgh", "master", "br0", "up"});
  REQUIRE(nodes.there.SetPeers("net-m", {{nodes.t1.public_key, nodes.t1.endpoint, {"10.214.7.2", "10.214.7.3"}}}).ok());
  REQUIRE(nodes.here.SetPeers("net-m", {{nodes.t2.public_key, nodes.t2.endpoint, {"10.214.7.4"}}}).ok());
  Server server(Fixture::Ns("vm-p"), "0.0.0.0", 7000, "left behind\n");
  REQUIRE(Fetch(g, "10.214.7.3", 7000) == "left behind\n");
  CHECK(NeighbourMac(g, "10.214.7.3") != PrivateNetworks::RouterMac("net-m"));

  // The switch-over: the guest runs on the target, its source port goes.
  Must({"ip", "-n", r2, "link", "set", "vgt", "master", "br0", "up"});
  Must({"ip", "-n", r1, "link", "del", "vgh"});
  nodes.there.Activate({Nic("net-m", "10.214.7.2")});
  CHECK(NeighbourMac(g, "10.214.7.3") == PrivateNetworks::RouterMac("net-m"));
  REQUIRE(nodes.here.SetPeers("net-m", {{nodes.t2.public_key, nodes.t2.endpoint, {"10.214.7.2", "10.214.7.4"}}}).ok());
  REQUIRE(nodes.there.SetPeers("net-m", {{nodes.t1.public_key, nodes.t1.endpoint, {"10.214.7.3"}}}).ok());
  absl::Duration gap = TimeUntilAnswer(g, "10.214.7.3", "left behind\n");
  INFO("traffic resumed after " << absl::FormatDuration(gap));
  CHECK(gap < absl::Seconds(2));
}

TEST_CASE("a gratuitous ARP frame announces the address at the MAC to everyone on the link",
          "[host_agent][private_network][arp]") {
  std::string f = GratuitousArpFrame("02:0a:0b:0c:0d:0e", "10.214.7.3");
  REQUIRE(f.size() == 60);
  CHECK(f.substr(0, 6) == std::string(6, '\xff'));
  CHECK(f.substr(6, 6) == "\x02\x0a\x0b\x0c\x0d\x0e");
  CHECK(f.substr(12, 2) == std::string("\x08\x06", 2));
  CHECK(f.substr(20, 2) == std::string("\x00\x01", 2));                  // a request
  CHECK(f.substr(22, 6) == f.substr(6, 6));                              // sender MAC
  CHECK(f.substr(28, 4) == "\x0a\xd6\x07\x03");                          // sender address
  CHECK(f.substr(38, 4) == f.substr(28, 4));                             // target address: the same
  CHECK(GratuitousArpFrame("01:00:00:00:00:01", "10.214.7.3").empty());  // multicast
  CHECK(GratuitousArpFrame("02:0a:0b:0c:0d:0e", "10.214.7").empty());
  CHECK(AnnounceAddresses("", "lo", "02:0a:0b:0c:0d:0e", {"nope"}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(PrivateNetworks::RouterMac("net-m") == PrivateNetworks::RouterMac("net-m"));
  CHECK(PrivateNetworks::RouterMac("net-m") != PrivateNetworks::RouterMac("net-n"));
}

TEST_CASE("private NICs are validated", "[host_agent][private_network]") {
  CHECK(ValidatePrivateNics({Nic("net-a", "10.214.0.2")}).ok());
  CHECK(!ValidatePrivateNics({Nic("Net_A", "10.214.0.2")}).ok());
  CHECK(!ValidatePrivateNics({Nic("net-a", "10.214.0")}).ok());
  CHECK(!ValidatePrivateNics({Nic("net-a", "10.214.0.2"), Nic("net-a", "10.214.1.2")}).ok());
  PrivateNic multicast = Nic("net-a", "10.214.0.2");
  multicast.mac = "03:00:00:00:00:01";
  CHECK(!ValidatePrivateNics({multicast}).ok());
  std::vector<PrivateNic> five;
  for (int i = 0; i < 5; ++i) five.push_back(Nic(absl::StrCat("n", i), "10.214.0.2"));
  CHECK(ValidatePrivateNics(five).message() == "a VM may be on at most 4 private networks");
  CHECK(PrivateNetworks::MacFor("vm-1", "net-a") == PrivateNetworks::MacFor("vm-1", "net-a"));
  CHECK(PrivateNetworks::MacFor("vm-1", "net-a") != PrivateNetworks::MacFor("vm-2", "net-a"));
  CHECK(absl::StartsWith(PrivateNetworks::MacFor("vm-1", "net-a"), "02:"));
}

TEST_CASE("the network-config keeps DHCP on the first NIC and puts each private address on its MAC",
          "[host_agent][private_network]") {
  CHECK(RenderNetworkConfig({}).empty());
  PrivateNic n = Nic("net-a", "10.214.0.2");
  n.mac = "02:aa:bb:cc:dd:ee";
  CHECK(RenderNetworkConfig({n}) ==
        "version: 2\nethernets:\n  uplink:\n    match:\n      macaddress: \"52:54:00:12:34:56\"\n    dhcp4: true\n"
        "  private0:\n    match:\n      macaddress: \"02:aa:bb:cc:dd:ee\"\n    addresses:\n      - 10.214.0.2/24\n");
}

}  // namespace
}  // namespace ppn::host
