// private_network_bench: what a private tenant network carries between two VMs, on one node
// (both on the router's bridge) and between two nodes (two agents' routers joined by their
// WireGuard tunnels, endpoints on the node's address so the packets take the node's DNAT of the
// tunnel ports as between machines). The VMs are played by their namespaces' kernels (an
// address on the VM side of the private NIC, as the netns tests do): this measures the network
// path the agent builds, not a guest's CPU. Not a test; needs root, wireguard-go and wg.
//
//   bazel build //host_agent:private_network_bench && sudo bazel-bin/host_agent/private_network_bench \
//       [--mib=256] [--pings=2000]
// (Our code is not on the measured path: the kernel and wireguard-go are, so -c opt changes nothing.)

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/process.h"
#include "host_agent/private_network.h"

ABSL_FLAG(int, mib, 256, "MiB sent one way per path");
ABSL_FLAG(int, pings, 2000, "1-byte request/response round trips per path");
ABSL_FLAG(std::string, node_address, "",
          "the address tunnels' endpoints use (default: the node's first global IPv4 address)");

namespace {

using ppn::host::NetworkTunnel;
using ppn::host::PrivateNetworks;

constexpr char kScopeA[] = "pnbench-a";
constexpr char kScopeB[] = "pnbench-b";
constexpr char kNet[] = "net-bench";
constexpr uint16_t kPort = 7700;

ppn::CommandRunner& Run() {
  static ppn::CommandRunner run = ppn::SpawnerCommandRunner(ppn::PosixProcessSpawner::Get());
  return run;
}

bool Must(const std::vector<std::string>& argv) {
  absl::StatusOr<std::string> r = Run()(argv, "");
  if (!r.ok()) std::fprintf(stderr, "private_network_bench: %s\n", std::string(r.status().message()).c_str());
  return r.ok();
}

// A socket made on a thread inside network namespace `netns`.
int SocketIn(const std::string& netns) {
  int s = -1;
  std::thread t([&] {
    int fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) return;
    close(fd);
    s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  });
  t.join();
  return s;
}

sockaddr_in Addr(const std::string& addr, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
  return a;
}

struct Result {
  double mbit_s = 0;
  double rtt_p50_us = 0, rtt_p99_us = 0;
  bool ok = false;
};

// Streams --mib MiB from `from` to `to_addr` (served in `to`), then times --pings round trips.
Result Measure(const std::string& from, const std::string& to, const std::string& to_addr) {
  Result r;
  int listener = SocketIn(to);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in any = Addr("0.0.0.0", kPort);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 || listen(listener, 4) != 0) {
    std::fprintf(stderr, "private_network_bench: cannot listen in %s\n", to.c_str());
    return r;
  }
  std::thread server([&] {
    // First connection: read to the end. Second: echo each byte.
    for (int round = 0; round < 2; ++round) {
      int c = accept(listener, nullptr, nullptr);
      if (c < 0) return;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::vector<char> buf(1 << 16);
      ssize_t n;
      while ((n = read(c, buf.data(), round == 0 ? buf.size() : 1)) > 0) {
        if (round == 1 && write(c, buf.data(), 1) != 1) break;
      }
      close(c);
    }
  });
  auto connect_to = [&]() {
    int s = SocketIn(from);
    sockaddr_in a = Addr(to_addr, kPort);
    timeval tv{5, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    // The first SYN may meet a tunnel whose handshake is still under way: retry for a while.
    for (int i = 0; i < 20; ++i) {
      if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
      close(s);
      absl::SleepFor(absl::Milliseconds(250));
      s = SocketIn(from);
      setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    close(s);
    return -1;
  };
  int s = connect_to();
  bool ok = s >= 0;
  if (ok) {
    std::vector<char> chunk(1 << 16, 'x');
    const uint64_t total = uint64_t{static_cast<uint64_t>(absl::GetFlag(FLAGS_mib))} << 20;
    absl::Time t0 = absl::Now();
    for (uint64_t sent = 0; sent < total && ok;) {
      ssize_t n = write(s, chunk.data(), std::min<uint64_t>(chunk.size(), total - sent));
      ok = n > 0;
      if (ok) sent += n;
    }
    shutdown(s, SHUT_WR);
    char end;
    (void)!read(s, &end, 1);  // the server closes once it read everything
    r.mbit_s = static_cast<double>(total) * 8 / 1e6 / absl::ToDoubleSeconds(absl::Now() - t0);
    close(s);
  }
  s = ok ? connect_to() : -1;
  ok = s >= 0;
  std::vector<double> rtts;
  if (ok) {
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int i = 0; i < absl::GetFlag(FLAGS_pings) && ok; ++i) {
      char b = 'p';
      absl::Time t0 = absl::Now();
      ok = write(s, &b, 1) == 1 && read(s, &b, 1) == 1;
      rtts.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
    }
    close(s);
  }
  shutdown(listener, SHUT_RDWR);
  close(listener);
  server.join();
  if (ok && !rtts.empty()) {
    std::sort(rtts.begin(), rtts.end());
    r.rtt_p50_us = rtts[rtts.size() / 2];
    r.rtt_p99_us = rtts[std::min(rtts.size() - 1, rtts.size() * 99 / 100)];
  }
  r.ok = ok;
  return r;
}

std::string NodeAddress() {
  if (!absl::GetFlag(FLAGS_node_address).empty()) return absl::GetFlag(FLAGS_node_address);
  std::string text = Run()({"ip", "-4", "-o", "addr", "show", "scope", "global"}, "").value_or("");
  size_t at = text.find("inet ");
  if (at == std::string::npos) return "127.0.0.1";
  return text.substr(at + 5, text.find('/', at) - at - 5);
}

void Cleanup(const std::vector<std::string>& namespaces) {
  for (const std::string& ns : namespaces) Run()({"ip", "netns", "del", ns}, "").IgnoreError();
  ppn::host::RemovePrivateNetworkScope(kScopeA, Run());
  ppn::host::RemovePrivateNetworkScope(kScopeB, Run());
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "private_network_bench: needs root (namespaces, bridges, WireGuard)\n");
    return 2;
  }
  const std::string vm1 = absl::StrCat("ppn.", kScopeA, ".vm-1"), vm2 = absl::StrCat("ppn.", kScopeA, ".vm-2"),
                    vm3 = absl::StrCat("ppn.", kScopeB, ".vm-3");
  const std::vector<std::string> namespaces = {vm1, vm2, vm3};
  Cleanup(namespaces);
  PrivateNetworks a(kScopeA, Run()), b(kScopeB, Run());
  struct Vm {
    PrivateNetworks* node;
    std::string id, ns, address;
  };
  std::vector<Vm> vms = {
      {&a, "vm-1", vm1, "10.214.250.2"}, {&a, "vm-2", vm2, "10.214.250.3"}, {&b, "vm-3", vm3, "10.214.250.4"}};
  bool ok = true;
  for (const Vm& vm : vms) {
    ok = ok && Must({"ip", "netns", "add", vm.ns}) && Must({"ip", "-n", vm.ns, "link", "set", "lo", "up"});
    absl::Status s = ok ? vm.node->Attach(vm.id, vm.ns, {{kNet, vm.address, 24, ""}}, "") : absl::OkStatus();
    if (!s.ok()) std::fprintf(stderr, "private_network_bench: %s\n", std::string(s.message()).c_str());
    ok = ok && s.ok() && Must({"ip", "-n", vm.ns, "addr", "add", vm.address + "/24", "dev", "pb0"});
  }
  const std::string mesh = NodeAddress();
  char keys[] = "/tmp/pnbench-keys-XXXXXX";
  ok = ok && mkdtemp(keys) != nullptr;
  absl::StatusOr<NetworkTunnel> ta = absl::UnknownError("not made"), tb = ta;
  if (ok) {
    ta = a.Tunnel(kNet, "10.214.250.0/24", {absl::StrCat(keys, "/a"), 52400, "wireguard-go", mesh});
    tb = b.Tunnel(kNet, "10.214.250.0/24", {absl::StrCat(keys, "/b"), 52400, "wireguard-go", mesh});
    ok = ta.ok() && tb.ok();
    if (!ok)
      std::fprintf(stderr, "private_network_bench: %s %s\n", std::string(ta.status().message()).c_str(),
                   std::string(tb.status().message()).c_str());
  }
  ok = ok && a.SetPeers(kNet, {{tb->public_key, tb->endpoint, {"10.214.250.4"}}}).ok() &&
       b.SetPeers(kNet, {{ta->public_key, ta->endpoint, {"10.214.250.2", "10.214.250.3"}}}).ok();
  Result same, across;
  if (ok) {
    same = Measure(vm1, vm2, "10.214.250.3");
    across = Measure(vm1, vm3, "10.214.250.4");
    ok = same.ok && across.ok;
  }
  Cleanup(namespaces);
  Run()({"rm", "-rf", keys}, "").IgnoreError();
  if (!ok) {
    std::fprintf(stderr, "private_network_bench: a measurement failed\n");
    return 1;
  }
  std::printf("private network, %d MiB and %d round trips per path (tunnel endpoints on %s):\n",
              absl::GetFlag(FLAGS_mib), absl::GetFlag(FLAGS_pings), mesh.c_str());
  std::printf("  one node (bridge):           %8.0f Mbit/s, RTT p50 %.0f us p99 %.0f us\n", same.mbit_s,
              same.rtt_p50_us, same.rtt_p99_us);
  std::printf("  two nodes (WireGuard tunnel): %7.0f Mbit/s, RTT p50 %.0f us p99 %.0f us\n", across.mbit_s,
              across.rtt_p50_us, across.rtt_p99_us);
  return 0;
}
