// fleet_bench: placement decisions per second over 10,000 simulated nodes, and the fleet
// core's cost of 10,000 nodes heartbeating once a second. Not a test.
//
//   bazel run -c opt //fleet:fleet_bench -- [--nodes=10000]

#include <sys/resource.h>

#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/clock.h"
#include "common/random.h"
#include "fleet/fleet_core.h"
#include "fleet/placement.h"
#include "fleet/placement_index.h"
#include "fleet/testing/fake_agent_client.h"

ABSL_FLAG(int, nodes, 10000, "Simulated nodes");

namespace {

double CpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

long MaxRssKb() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int n = absl::GetFlag(FLAGS_nodes);
  std::mt19937_64 rng(1);
  std::vector<ppn::fleet::NodeView> views(n);
  for (int i = 0; i < n; ++i) {
    views[i].node_id = "node-" + std::to_string(i);
    views[i].alive = rng() % 20 != 0;
    views[i].available_mib = 1024 + rng() % 65536;
    views[i].reserved_mib = rng() % 512;
    views[i].kvm = rng() % 3 ? ppn::types::v1::KVM_SUPPORT_AVAILABLE : ppn::types::v1::KVM_SUPPORT_NONE;
  }
  ppn::fleet::PlacementRequest req;
  req.memory_mib = 2048;
  for (bool explain : {false, true}) {
    int iters = explain ? 200 : 20000;
    absl::Time t0 = absl::Now();
    size_t chosen = 0;
    for (int i = 0; i < iters; ++i) chosen += ppn::fleet::Place(views, req, explain).chosen_node_id.size();
    double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    std::printf("placement over %d nodes, %s: %.0f decisions/s (%.1f us each)%s\n", n,
                explain ? "with every node's reason" : "winner only", iters / secs, secs / iters * 1e6,
                chosen ? "" : " (none chosen)");
  }

  {
    // The fleet's create path: the placement index (kept up to date by heartbeats).
    ppn::fleet::PlacementIndex index;
    for (const auto& v : views) index.Upsert(v);
    int iters = 200000;
    absl::Time t0 = absl::Now();
    size_t chosen = 0;
    for (int i = 0; i < iters; ++i) {
      req.memory_mib = 512 + (i % 4096);
      chosen += index.Best(req).size();
    }
    double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    std::printf("placement over %d nodes through the placement index: %.0f decisions/s (%.2f us each)%s\n", n,
                iters / secs, secs / iters * 1e6, chosen ? "" : " (none chosen)");
    absl::Time u0 = absl::Now();
    for (int i = 0; i < iters; ++i) {
      auto v = views[i % n];
      v.available_mib = 1024 + (i * 7919) % 65536;
      index.Upsert(v);
    }
    std::printf("placement index update (a heartbeat's new free memory): %.2f us each\n",
                absl::ToDoubleMicroseconds(absl::Now() - u0) / iters);
  }

  // The fleet core receiving one heartbeat per node per second (2 VMs each).
  std::string db = "/tmp/ppn-fleet-bench.db";
  std::remove(db.c_str());
  auto store = *ppn::fleet::VmStore::Open(db);
  ppn::fleet::testing::FakeAgentClientFactory agents;
  ppn::fleet::FleetCore core({store.get(), &agents, ppn::RealClock::Get(), ppn::OpenSslRandom::Get()},
                             {absl::Seconds(1)});
  std::vector<ppn::host::v1::Heartbeat> beats(n);
  for (int i = 0; i < n; ++i) {
    core.AddNode(views[i].node_id, "10.8.0.1:7000");
    auto& hb = beats[i];
    hb.set_node_id(views[i].node_id);
    hb.set_available_memory_mib(views[i].available_mib);
    hb.set_total_memory_mib(views[i].available_mib + 4096);
    hb.set_kvm(views[i].kvm);
    hb.mutable_interval()->set_seconds(1);
    for (int v = 0; v < 2; ++v) {
      auto* vm = hb.add_vms();
      vm->set_vm_id(views[i].node_id + "-vm" + std::to_string(v));
      vm->set_tenant_id("t" + std::to_string(i % 50));
      vm->set_state(ppn::types::v1::VM_STATE_RUNNING);
      vm->mutable_spec()->set_memory_mib(512);
    }
  }
  for (const auto& hb : beats) core.OnHeartbeat(hb);  // first round adopts every VM (writes)
  double c0 = CpuSeconds();
  absl::Time t0 = absl::Now();
  const int rounds = 5;
  for (int r = 0; r < rounds; ++r) {
    for (const auto& hb : beats) core.OnHeartbeat(hb);
    core.RunOnce();
  }
  double cpu = (CpuSeconds() - c0) / rounds;
  std::printf(
      "fleet core, %d nodes heartbeating once a second (2 VMs each): %.3f s of CPU per second (%.1f%% of one core), "
      "%.1f s wall per round; max RSS %ld MiB\n",
      n, cpu, cpu * 100, absl::ToDoubleSeconds(absl::Now() - t0) / rounds, MaxRssKb() / 1024);
  ppn::types::v1::VmSpec spec;
  spec.set_display_name("bench");
  spec.set_vcpus(1);
  spec.set_memory_mib(2048);
  spec.set_image("debian-12");
  absl::Time c = absl::Now();
  int creates = 200;
  for (int i = 0; i < creates; ++i) {
    spec.set_display_name("bench-" + std::to_string(i));
    if (!core.CreateVm("bench", spec, "").ok()) return 1;
  }
  double secs = absl::ToDoubleSeconds(absl::Now() - c);
  std::printf("fleet core CreateVm at %d nodes (place + durable record twice, fake agent): %.0f creates/s\n", n,
              creates / secs);
  return 0;
}
