// guest_network_bench: what a VM's own network namespace costs its guest's traffic to the
// internet side, against QEMU's user-mode networking in the node's namespace (the earlier
// default), side by side in one run. A server in a namespace of the bench's own (203.0.113.1,
// routed from the node, like the isolation test's "internet") answers the guest's connections:
// the first kSmall with one byte (request latency: accept to the guest closing), the rest with
// --mib MiB (throughput). Two in-process VmManagers boot the test guest, one per mode, taking
// turns for --rounds rounds. Not a test; needs root.
//
//   bazel build -c opt //host_agent:guest_network_bench //tools:test_guest
//   sudo bazel-bin/host_agent/guest_network_bench --guest=bazel-bin/tools/test_guest

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/process.h"
#include "host_agent/testing/bench_guest.h"
#include "host_agent/vm_manager.h"
#include "host_agent/vm_network.h"

ABSL_FLAG(std::string, guest, "bazel-bin/tools/test_guest", "Directory of the built test guest");
ABSL_FLAG(int, rounds, 3, "Rounds; each boots one guest per mode");
ABSL_FLAG(int, mib, 16, "MiB per throughput transfer");
ABSL_FLAG(int, transfers, 3, "Throughput transfers per guest");

namespace {

constexpr int kSmall = 10;  // latency connections per guest
const char* const kInetNs = "ppnbench-inet";

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int Sh(const std::string& cmd) { return std::system(cmd.c_str()); }

// The internet side: answers each connection, timing it from accept to the peer's close.
class Server {
 public:
  Server() {
    std::thread make([this] {
      int ns = open((std::string("/run/netns/") + kInetNs).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) std::abort();
      close(ns);
      fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(8000);
      inet_pton(AF_INET, "203.0.113.1", &a.sin_addr);
      if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 16) != 0) std::abort();
    });
    make.join();
    thread_ = std::thread([this] { Serve(); });
  }
  ~Server() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  // Connections from now on count for `label`, the first kSmall of them as latency.
  void Phase(const std::string& label) {
    absl::MutexLock l(&mu_);
    label_ = label;
    count_ = 0;
  }
  std::vector<double> Latency(const std::string& label) {
    absl::MutexLock l(&mu_);
    return latency_ms_[label];
  }
  std::vector<double> Mbps(const std::string& label) {
    absl::MutexLock l(&mu_);
    return mbps_[label];
  }

 private:
  void Serve() {
    std::string block(1 << 20, 'z');
    while (true) {
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      absl::Time t0 = absl::Now();
      std::string label;
      bool small;
      {
        absl::MutexLock l(&mu_);
        label = label_;
        small = count_++ < kSmall;
      }
      int mib = small ? 0 : absl::GetFlag(FLAGS_mib);
      bool ok = true;
      if (small) ok = write(c, "z", 1) == 1;
      for (int i = 0; ok && i < mib; ++i) {
        for (size_t off = 0; ok && off < block.size();) {
          ssize_t n = write(c, block.data() + off, block.size() - off);
          ok = n > 0;
          if (ok) off += static_cast<size_t>(n);
        }
      }
      shutdown(c, SHUT_WR);
      char buf[256];
      while (ok && read(c, buf, sizeof buf) > 0) {
      }
      double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
      close(c);
      absl::MutexLock l(&mu_);
      if (!ok) continue;
      if (small) {
        latency_ms_[label].push_back(ms);
      } else {
        mbps_[label].push_back(mib * 8.0 * 1.048576 / (ms / 1000.0));
      }
    }
  }

  int fd_ = -1;
  std::thread thread_;
  absl::Mutex mu_;
  std::string label_ ABSL_GUARDED_BY(mu_);
  int count_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::vector<double>> latency_ms_ ABSL_GUARDED_BY(mu_), mbps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "guest_network_bench: needs root (namespaces and nftables)\n");
    return 2;
  }
  std::string dir = "/tmp/ppn-guest-network-bench";
  absl::StatusOr<ppn::host::ImageCatalog> staged = ppn::host::testing::StageTestGuest(absl::GetFlag(FLAGS_guest), dir);
  if (!staged.ok()) {
    std::fprintf(stderr, "%s\n", std::string(staged.status().message()).c_str());
    return 1;
  }
  ppn::host::ImageCatalog catalog = *std::move(staged);
  ppn::CommandRunner run = ppn::SpawnerCommandRunner(ppn::PosixProcessSpawner::Get());
  absl::StatusOr<ppn::host::NetworkOptions> net_options =
      ppn::host::DiscoverNetworkOptions("bench", "127.0.0.1", {}, run);
  if (!net_options.ok()) {
    std::fprintf(stderr, "guest_network_bench: %s\n", std::string(net_options.status().message()).c_str());
    return 1;
  }
  net_options->scope = "gnbench";
  net_options->claims_dir = "/run/ppn-bench-links";
  ppn::host::VmNetwork network(*net_options, run);

  ppn::host::VmManager::Options o;
  o.kvm_mode = ppn::host::KvmMode::kOff;
  ppn::host::VmManager::Options on = o, ou = o;
  on.node_id = "netns";
  on.state_dir = dir + "/netns";
  on.port_first = 24000;
  on.port_last = 24099;
  ou.node_id = "user";
  ou.state_dir = dir + "/user";
  ou.port_first = 24100;
  ou.port_last = 24199;
  auto store_n = *ppn::host::VmStore::Open(dir + "/netns.db");
  auto store_u = *ppn::host::VmStore::Open(dir + "/user.db");
  ppn::PosixProcessSpawner* spawner = ppn::PosixProcessSpawner::Get();
  ppn::host::VmManager with_netns(on, catalog, {store_n.get(), ppn::RealClock::Get(), spawner, &network});
  ppn::host::VmManager user_mode(ou, catalog, {store_u.get(), ppn::RealClock::Get(), spawner});
  if (!with_netns.Start().ok() || !user_mode.Start().ok()) return 1;

  // The internet, made after the node's networks were discovered: not one of its own.
  Sh(absl::StrCat("ip netns del ", kInetNs, " 2>/dev/null; ip link del ppnbench-i0 2>/dev/null; ip netns add ", kInetNs,
                  " && ip link add ppnbench-i0 type veth peer name eth0 netns ", kInetNs,
                  " && ip addr add 203.0.113.254/24 dev ppnbench-i0 && ip link set ppnbench-i0 up && ip -n ", kInetNs,
                  " addr add 203.0.113.1/24 dev eth0 && ip -n ", kInetNs, " link set eth0 up && ip -n ", kInetNs,
                  " link set lo up && ip -n ", kInetNs, " route add default via 203.0.113.254"));
  int rc = 0;
  {
    Server server;
    const int transfers = absl::GetFlag(FLAGS_transfers);
    for (int round = 0; round < absl::GetFlag(FLAGS_rounds) && rc == 0; ++round) {
      for (auto [label, mgr] : {std::pair<std::string, ppn::host::VmManager*>{"namespace", &with_netns},
                                std::pair<std::string, ppn::host::VmManager*>{"user-mode", &user_mode}}) {
        ppn::types::v1::VmSpec spec;
        spec.set_display_name("bench");
        spec.set_vcpus(1);
        spec.set_memory_mib(256);
        spec.set_image("ppn-test-guest");
        spec.set_user_data(absl::StrCat("#ppn-fetch 203.0.113.1 8000 ", kSmall + transfers, "\n"));
        std::string id = absl::StrCat("gn-", label.substr(0, 4), "-", round);
        server.Phase(label);
        auto vm = mgr->Spawn(ppn::VmId(id), ppn::TenantId("bench"), spec);
        if (!vm.ok()) {
          std::fprintf(stderr, "spawn failed: %s\n", std::string(vm.status().message()).c_str());
          rc = 1;
          break;
        }
        absl::Time until = absl::Now() + absl::Seconds(180);
        while (absl::Now() < until &&
               !absl::StrContains(ppn::ReadFile(vm->console_log_path()).value_or(""), "PPN-FETCH-DONE")) {
          absl::SleepFor(absl::Milliseconds(100));
        }
        if (absl::Now() >= until) {
          std::fprintf(stderr, "%s: the guest did not finish its transfers in 180 s\n", label.c_str());
          rc = 1;
        }
        mgr->Destroy(id, absl::Seconds(5)).IgnoreError();
      }
    }
    for (const char* label : {"namespace", "user-mode"}) {
      std::vector<double> lat = server.Latency(label), mbps = server.Mbps(label);
      std::printf(
          "%-9s: %zu small answers: p50 %.1f ms (p99 %.1f); %zu transfers of %d MiB: p50 %.0f Mbit/s (min %.0f)\n",
          label, lat.size(), Pct(lat, 0.5), Pct(lat, 0.99), mbps.size(), absl::GetFlag(FLAGS_mib), Pct(mbps, 0.5),
          Pct(mbps, 0.0));
    }
  }
  Sh(absl::StrCat("ip link del ppnbench-i0 2>/dev/null; ip netns del ", kInetNs, " 2>/dev/null"));
  ppn::host::RemoveNetworkScope("gnbench", run, "/run/ppn-bench-links");
  return rc;
}
