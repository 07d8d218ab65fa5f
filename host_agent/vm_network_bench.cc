// vm_network_bench: what a VM's own network costs a create and a destroy on this machine: the
// namespace, veth pair, the namespace's nftables rules and one forwarded port (Create +
// AddForwards), then their removal. Not a test; needs root.
//
//   bazel build -c opt //host_agent:vm_network_bench && sudo bazel-bin/host_agent/vm_network_bench [--runs=50]

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/process.h"
#include "host_agent/vm_network.h"

ABSL_FLAG(int, runs, 50, "VM networks to make and remove");

namespace {

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "vm_network_bench: needs root (namespaces and nftables)\n");
    return 2;
  }
  ppn::CommandRunner run = ppn::SpawnerCommandRunner(ppn::PosixProcessSpawner::Get());
  absl::StatusOr<ppn::host::NetworkOptions> o = ppn::host::DiscoverNetworkOptions("bench", "127.0.0.1", {}, run);
  if (!o.ok()) {
    std::fprintf(stderr, "vm_network_bench: %s\n", std::string(o.status().message()).c_str());
    return 1;
  }
  o->scope = "bench";
  o->claims_dir = "/run/ppn-bench-links";
  ppn::host::VmNetwork net(*o, run);
  if (!net.StartNode({}).ok()) return 1;
  std::vector<double> create_ms, remove_ms;
  for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
    std::string vm = absl::StrCat("vm-bench-", i);
    absl::Time t0 = absl::Now();
    absl::StatusOr<ppn::host::VmLink> link = net.Acquire(vm);
    absl::Status s = link.ok() ? net.Create(*link, {}) : link.status();
    if (s.ok()) s = net.AddForwards(*link, {{static_cast<uint32_t>(24000 + i), false}});
    absl::Time t1 = absl::Now();
    if (!s.ok()) {
      std::fprintf(stderr, "vm_network_bench: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    if (!net.Remove(*link, {{static_cast<uint32_t>(24000 + i), false}}).ok()) return 1;
    net.Release(*link);
    absl::Time t2 = absl::Now();
    create_ms.push_back(absl::ToDoubleMilliseconds(t1 - t0));
    remove_ms.push_back(absl::ToDoubleMilliseconds(t2 - t1));
  }
  ppn::host::RemoveNetworkScope("bench", run, "/run/ppn-bench-links");
  std::printf("VM network, %d runs: make p50 %.1f ms p99 %.1f ms; remove p50 %.1f ms p99 %.1f ms\n",
              absl::GetFlag(FLAGS_runs), Pct(create_ms, 0.5), Pct(create_ms, 0.99), Pct(remove_ms, 0.5),
              Pct(remove_ms, 0.99));
  return 0;
}
