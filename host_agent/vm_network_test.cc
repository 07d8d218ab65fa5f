#include "host_agent/vm_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "tests/harness/host_network_lock.h"

namespace ppn::host {
namespace {

// Fixed names and subnets on the host: one copy of this test at a time, across checkouts.
ppn::testing::HostNetworkLock host_network_lock;

// Runs argv, in `netns` when set (through `ip netns exec`, which the agent's spawner does with
// setns itself), capturing its output.
absl::StatusOr<std::string> RunForTest(const std::vector<std::string>& argv, const std::string& netns) {
  std::vector<std::string> full = argv;
  if (!netns.empty()) full.insert(full.begin(), {"ip", "netns", "exec", netns});
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    std::vector<char*> args;
    for (auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // Bazel's test PATH leaves out the sbin directories where ip and nft live.
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

// Runs `fn` on a thread that has entered network namespace `netns`: its sockets live there.
template <typename Fn>
auto InNamespace(const std::string& netns, Fn fn) {
  decltype(fn()) result{};
  std::thread t([&] {
    int fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(setns(fd, CLONE_NEWNET) == 0);
    close(fd);
    result = fn();
  });
  t.join();
  return result;
}

int Listen(const std::string& addr, uint16_t port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(s, 16) != 0) {
    close(s);
    return -1;
  }
  return s;
}

// Serves one "hello\n" per connection until the socket is closed.
struct Server {
  int fd;
  std::thread thread;
  Server(int listen_fd, const std::string& reply) : fd(listen_fd) {
    thread = std::thread([this, reply] {
      while (true) {
        int c = accept(fd, nullptr, nullptr);
        if (c < 0) return;
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

// What a connection to addr:port reads within 2 s, or "" if it fails.
std::string Fetch(const std::string& addr, uint16_t port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
  std::string out;
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    char buf[64];
    ssize_t n = read(s, buf, sizeof buf);
    if (n > 0) out.assign(buf, n);
  }
  close(s);
  return out;
}

NetworkOptions Options() {
  NetworkOptions o;
  o.node_id = "nettest";
  o.mesh_address = "127.0.0.1";
  o.link_range = "10.213.240.0/22";
  o.claims_dir = "/run/ppntest-links";
  std::string ip_json = RunForTest({"ip", "-j", "addr"}, "").value_or("[]");
  ParseNodeAddresses(ip_json, &o.node_addresses, &o.lan_ranges);
  return o;
}

TEST_CASE("the node table forwards host ports into namespaces and guards the node", "[host_agent][vm_network]") {
  NetworkOptions o;
  o.node_id = "laptop-a";
  o.mesh_address = "10.250.88.11";
  o.lan_ranges = {"192.168.1.0/24"};
  VmNetwork net(o, RunForTest);
  VmLink link = *net.LinkFor("vm-1", 3);
  CHECK(link.netns == "ppn.laptop-a.vm-1");
  CHECK(link.host_if.size() <= 15);
  CHECK(link.host_ip == "10.213.0.13");
  CHECK(link.netns_ip == "10.213.0.14");
  std::string t = net.RenderNodeTable({{link, {{20300, false}, {20301, true}}}});
  CHECK(absl::StrContains(t, "table ip ppn_laptop_a {"));
  CHECK(absl::StrContains(t, "map tcp_fwd { type inet_service : ipv4_addr; elements = { 20300 : 10.213.0.14 }; }"));
  CHECK(absl::StrContains(t, "map udp_fwd { type inet_service : ipv4_addr; elements = { 20301 : 10.213.0.14 }; }"));
  CHECK(absl::StrContains(t, "ip daddr 10.250.88.11 dnat to tcp dport map @tcp_fwd"));
  CHECK(absl::StrContains(t, "ip saddr 10.213.0.0/16 counter drop"));
  // Its LAN ranges hold for its own VMs only: another agent on the host (or a dead one's table)
  // must not cut off this one's guests.
  CHECK(absl::StrContains(t, "set own { type ipv4_addr; elements = { 10.213.0.14 }; }"));
  CHECK(absl::StrContains(t, "set lan { type ipv4_addr; flags interval; auto-merge; elements = { 192.168.1.0/24 }; }"));
  CHECK(absl::StrContains(t, "ip saddr @own ip daddr @lan counter drop"));
  CHECK(!absl::StrContains(t, "192.168.1.0/24, "));  // not in the pool-wide denied set
  // A LAN neighbour cannot route 127.0.0.1 here (route_localnet is on for loopback meshes).
  CHECK(absl::StrContains(t,
                          "type filter hook prerouting priority -300; policy accept;\n"
                          "    iif != \"lo\" ip daddr 127.0.0.0/8 counter drop\n"));
  CHECK(net.LinkFor("vm-1", net.Capacity()).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a VM's rules deny the node and the pool, then apply the tenant's lists", "[host_agent][vm_network]") {
  NetworkOptions o;
  o.node_id = "n";
  o.node_addresses = {"192.0.2.2"};
  o.dns_servers = {"192.0.2.53"};
  VmNetwork net(o, RunForTest);
  EgressPolicy p;
  p.internet = false;
  p.allow = {{"203.0.113.0/24", 443, 443, false}};
  p.deny = {{"203.0.113.7", 0, 0, false}};
  p.rate_limit_kbit = 8000;
  std::string r = net.RenderVmRules(p);
  CHECK(absl::StrContains(r, "policy drop;"));
  CHECK(absl::StrContains(r, "limit rate over 1000000 bytes/second counter drop"));
  CHECK(absl::StrContains(r, "ip daddr 192.0.2.53 udp dport 53 accept"));
  CHECK(absl::StrContains(r, "ip daddr 203.0.113.7 counter drop"));
  CHECK(absl::StrContains(r, "ip daddr 203.0.113.0/24 tcp dport 443 accept"));
  CHECK(!absl::StrContains(r, "    accept\n    counter drop"));  // no internet
  CHECK(r.find("203.0.113.7 counter drop") < r.find("@denied counter drop"));
  CHECK(r.find("@denied counter drop") < r.find("203.0.113.0/24 tcp dport 443 accept"));
  p.internet = true;
  CHECK(absl::StrContains(net.RenderVmRules(p), "    accept\n    counter drop"));
  CHECK(absl::StrContains(net.RenderVmRules(p),
                          "table ip6 ppn6 {\n  chain input { type filter hook input priority "
                          "filter; policy drop; }\n"));
}

TEST_CASE("egress policies are validated", "[host_agent][vm_network]") {
  EgressPolicy p;
  p.allow = {{"10.0.0.0/33", 0, 0, false}};
  CHECK(ValidateEgressPolicy(p).message() == "egress allow: \"10.0.0.0/33\" is not an IPv4 CIDR");
  p.allow = {{"10.0.0.0/8", 90, 80, false}};
  CHECK(ValidateEgressPolicy(p).code() == absl::StatusCode::kInvalidArgument);
  p.allow = {{"10.0.0.0/8", 80, 90, false}};
  CHECK(ValidateEgressPolicy(p).ok());
  p.allow = {{"203.0.113.5/32\n", 0, 0, false}};  // would end the rule early in the nft file
  CHECK(ValidateEgressPolicy(p).message() == "egress allow: \"203.0.113.5/32\n\" is not an IPv4 CIDR");
  p.allow = {{"203.0.113.5/ 8", 0, 0, false}};
  CHECK(ValidateEgressPolicy(p).code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParseNameservers("nameserver 127.0.0.53\nnameserver 10.255.255.53\n# x\n") ==
        std::vector<std::string>{"10.255.255.53"});
}

// An "internet" host of the test's own: a namespace routed from the node at 198.51.100.1.
struct InternetHost {
  InternetHost() {
    RunForTest({"ip", "netns", "del", "ppntest-inet"}, "").IgnoreError();
    REQUIRE(RunForTest({"ip", "netns", "add", "ppntest-inet"}, "").ok());
    REQUIRE(
        RunForTest({"ip", "link", "add", "ppntest-i0", "type", "veth", "peer", "name", "eth0", "netns", "ppntest-inet"},
                   "")
            .ok());
    REQUIRE(RunForTest({"ip", "addr", "add", "198.51.100.254/24", "dev", "ppntest-i0"}, "").ok());
    REQUIRE(RunForTest({"ip", "link", "set", "ppntest-i0", "up"}, "").ok());
    REQUIRE(RunForTest({"ip", "-n", "ppntest-inet", "addr", "add", "198.51.100.1/24", "dev", "eth0"}, "").ok());
    REQUIRE(RunForTest({"ip", "-n", "ppntest-inet", "link", "set", "eth0", "up"}, "").ok());
    REQUIRE(RunForTest({"ip", "-n", "ppntest-inet", "route", "add", "default", "via", "198.51.100.254"}, "").ok());
  }
  ~InternetHost() {
    RunForTest({"ip", "link", "del", "ppntest-i0"}, "").IgnoreError();
    RunForTest({"ip", "netns", "del", "ppntest-inet"}, "").IgnoreError();
  }
};

TEST_CASE("a VM's namespace reaches the internet and its forwarded port, and nothing of the node",
          "[host_agent][vm_network][netns]") {
  REQUIRE(geteuid() == 0);  // namespaces and nftables need root; CI runs as root
  NetworkOptions o = Options();
  VmNetwork net(o, RunForTest);
  InternetHost inet;
  auto started = net.StartNode({});
  INFO(started.status().message());
  REQUIRE(started.ok());
  absl::StatusOr<VmLink> acquired = net.Acquire("vm-a");
  REQUIRE(acquired.ok());
  VmLink link = *acquired;
  CHECK(net.Acquire("vm-a")->index == link.index);  // its claim, not a second one
  EgressPolicy policy;
  absl::Status created = net.Create(link, policy);
  INFO(created.message());
  REQUIRE(created.ok());
  REQUIRE(net.AddForwards(link, {{24180, false}}).ok());
  // No IPv6 inside: the veth's link-local addresses lead nowhere.
  CHECK(RunForTest({"ip", "netns", "exec", link.netns, "nft", "list", "chain", "ip6", "ppn6", "output"}, "")
            .value_or("")
            .find("policy drop") != std::string::npos);

  // The internet host serves on 80; the node serves on 7199 (a control-plane port).
  int inet_fd = InNamespace("ppntest-inet", [] { return Listen("198.51.100.1", 80); });
  REQUIRE(inet_fd >= 0);
  Server internet(inet_fd, "internet\n");
  Server node_service(Listen("0.0.0.0", 7199), "node\n");
  // What the VM's QEMU would listen on for its forwarded port.
  int vm_fd = InNamespace(link.netns, [&] { return Listen(link.netns_ip, 24180); });
  REQUIRE(vm_fd >= 0);
  Server guest(vm_fd, "guest\n");

  CHECK(Fetch("127.0.0.1", 24180) == "guest\n");  // the forwarded port reaches it
  CHECK(InNamespace(link.netns, [] { return Fetch("198.51.100.1", 80); }) == "internet\n");
  CHECK(InNamespace(link.netns, [&] { return Fetch(link.host_ip, 7199); }).empty());
  for (const std::string& a : o.node_addresses) {
    INFO("node address " << a);
    CHECK(InNamespace(link.netns, [&] { return Fetch(a, 7199); }).empty());
  }
  CHECK(InNamespace(link.netns, [] { return Fetch("127.0.0.1", 7199); }).empty());

  SECTION("a second VM on the node is unreachable from the first") {
    VmLink other = *net.Acquire("vm-b");
    CHECK(other.index != link.index);
    REQUIRE(net.Create(other, policy).ok());
    int other_fd = InNamespace(other.netns, [&] { return Listen(other.netns_ip, 24181); });
    Server other_guest(other_fd, "other\n");
    REQUIRE(net.AddForwards(other, {{24181, false}}).ok());
    CHECK(Fetch("127.0.0.1", 24181) == "other\n");
    CHECK(InNamespace(link.netns, [&] { return Fetch(other.netns_ip, 24181); }).empty());
    CHECK(InNamespace(link.netns, [&] { return Fetch(o.mesh_address, 24181); }).empty());
    REQUIRE(net.Remove(other, {{24181, false}}).ok());
    net.Release(other);
  }

  SECTION("a live policy change takes effect for new connections") {
    EgressPolicy closed;
    closed.internet = false;
    REQUIRE(net.ApplyPolicy(link, closed).ok());
    CHECK(InNamespace(link.netns, [] { return Fetch("198.51.100.1", 80); }).empty());
    CHECK(Fetch("127.0.0.1", 24180) == "guest\n");  // inbound to its forwarded port still works
    EgressPolicy allow_one = closed;
    allow_one.allow = {{"198.51.100.1", 80, 80, false}};
    REQUIRE(net.ApplyPolicy(link, allow_one).ok());
    CHECK(InNamespace(link.netns, [] { return Fetch("198.51.100.1", 80); }) == "internet\n");
    EgressPolicy deny_one = policy;
    deny_one.deny = {{"198.51.100.0/24", 0, 0, false}};
    REQUIRE(net.ApplyPolicy(link, deny_one).ok());
    CHECK(InNamespace(link.netns, [] { return Fetch("198.51.100.1", 80); }).empty());
  }

  REQUIRE(net.Remove(link, {{24180, false}}).ok());
  net.Release(link);
  CHECK(net.ListNamespaces().empty());
  CHECK(std::filesystem::is_empty("/run/ppntest-links"));
  CHECK(!RunForTest({"ip", "link", "show", link.host_if}, "").ok());
  CHECK(Fetch("127.0.0.1", 24180).empty());
  RunForTest({"nft", "delete", "table", "ip", net.NodeTableName()}, "").IgnoreError();
}

TEST_CASE("the node's start removes namespaces and veths that belong to no VM", "[host_agent][vm_network][netns]") {
  REQUIRE(geteuid() == 0);
  VmNetwork net(Options(), RunForTest);
  auto started = net.StartNode({});
  INFO(started.status().message());
  REQUIRE(started.ok());
  VmLink keep = *net.Acquire("vm-keep"), gone = *net.Acquire("vm-gone");
  REQUIRE(net.Create(keep, {}).ok());
  REQUIRE(net.Create(gone, {}).ok());
  // The agent crashed and vm-gone no longer exists; a namespace without a claim is left too.
  REQUIRE(RunForTest({"ip", "netns", "add", net.NamespacePrefix() + "orphan"}, "").ok());
  std::vector<std::string> removed;
  auto links = net.StartNode({{"vm-keep", {}}}, &removed);
  REQUIRE(links.ok());
  CHECK(links->size() == 1);
  CHECK(links->at("vm-keep").index == keep.index);
  CHECK(std::find(removed.begin(), removed.end(), gone.netns) != removed.end());
  CHECK(std::find(removed.begin(), removed.end(), net.NamespacePrefix() + "orphan") != removed.end());
  CHECK(net.ListNamespaces() == std::vector<std::string>{keep.netns});
  CHECK(!RunForTest({"ip", "link", "show", gone.host_if}, "").ok());
  REQUIRE(net.Remove(keep, {}).ok());
  net.Release(keep);
  CHECK(net.ListNamespaces().empty());
  CHECK(std::filesystem::is_empty("/run/ppntest-links"));
  RunForTest({"nft", "delete", "table", "ip", net.NodeTableName()}, "").IgnoreError();
}

}  // namespace
}  // namespace ppn::host
