// readiness_bench: what readiness detection costs (docs/guest-channel.md). For each of N cold
// boots of the test guest: from Spawn's call to the guest's first console ready marker
// (PPN-GUEST-READY in its serial log, polled every 2 ms), and to the VM being RUNNING as the
// API reports it (the manager's change notification, as heartbeats follow it); the difference
// is the detection overhead. p50 and p99. Not a test.
//
//   bazel build -c opt //host_agent:readiness_bench //tools:test_guest
//   bazel-bin/host_agent/readiness_bench --guest=bazel-bin/tools/test_guest [--runs=10]

#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/process.h"
#include "host_agent/testing/bench_guest.h"
#include "host_agent/vm_manager.h"

ABSL_FLAG(std::string, guest, "bazel-bin/tools/test_guest", "Directory of the built test guest");
ABSL_FLAG(int, runs, 10, "Cold boots");

namespace {

using ppn::host::VmManager;
using ppn::host::v1::VmInstance;

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = "/tmp/ppn-readiness-bench";
  if (absl::Status staged =
          ppn::host::testing::StageTestGuest(absl::GetFlag(FLAGS_guest), dir, "console=ttyS0 panic=-1 quiet").status();
      !staged.ok()) {
    std::fprintf(stderr, "%s\n", std::string(staged.message()).c_str());
    return 1;
  }
  VmManager::Options o;
  o.node_id = "bench";
  o.state_dir = dir + "/state";
  o.port_first = 24600;
  o.port_last = 24699;
  o.templates = false;  // every create boots: readiness is about boots
  auto store = *ppn::host::VmStore::Open(dir + "/agent.db");
  VmManager m(o, *ppn::host::ImageCatalog::Load(dir + "/catalog.json"),
              VmManager::Deps{store.get(), ppn::RealClock::Get(), ppn::PosixProcessSpawner::Get()});
  if (absl::Status s = m.Start(); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("accelerator: %s; %d cold boots of the test guest (1 vCPU, 128 MiB)\n", m.kvm_usable() ? "kvm" : "tcg",
              absl::GetFlag(FLAGS_runs));
  std::vector<double> marker_ms, ready_ms, overhead_ms, boot_ms;
  for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
    const std::string id = absl::StrCat("ready-", i);
    ppn::types::v1::VmSpec spec;
    spec.set_display_name(id);
    spec.set_vcpus(1);
    spec.set_memory_mib(128);
    spec.set_image("ppn-test-guest");
    spec.add_port_forwards()->set_guest_port(80);
    const absl::Time t0 = absl::Now();
    absl::StatusOr<VmInstance> vm = m.Spawn(ppn::VmId(id), ppn::TenantId("bench"), spec);
    if (!vm.ok()) {
      std::fprintf(stderr, "spawn %s: %s\n", id.c_str(), std::string(vm.status().message()).c_str());
      return 1;
    }
    absl::Time marker = absl::InfiniteFuture(), ready = absl::InfiniteFuture();
    const absl::Time deadline = t0 + absl::Minutes(3);
    uint64_t version = m.version();
    while ((marker == absl::InfiniteFuture() || ready == absl::InfiniteFuture()) && absl::Now() < deadline) {
      if (marker == absl::InfiniteFuture() &&
          absl::StrContains(ppn::ReadFile(vm->console_log_path()).value_or(""), "PPN-GUEST-READY")) {
        marker = absl::Now();
      }
      if (ready == absl::InfiniteFuture()) {
        for (const VmInstance& v : m.List()) {
          if (v.vm_id() == id && v.state() == ppn::types::v1::VM_STATE_RUNNING) {
            ready = absl::Now();
            boot_ms.push_back(absl::ToDoubleMilliseconds(absl::Seconds(v.boot_duration().seconds()) +
                                                         absl::Nanoseconds(v.boot_duration().nanos())));
          }
        }
      }
      version = m.WaitForChange(version, absl::Milliseconds(2));
    }
    if (marker == absl::InfiniteFuture() || ready == absl::InfiniteFuture()) {
      std::fprintf(stderr, "%s: not ready within 3 minutes\n", id.c_str());
      return 1;
    }
    marker_ms.push_back(absl::ToDoubleMilliseconds(marker - t0));
    ready_ms.push_back(absl::ToDoubleMilliseconds(ready - t0));
    overhead_ms.push_back(absl::ToDoubleMilliseconds(ready - marker));
    m.Destroy(id, absl::Seconds(2)).IgnoreError();
  }
  std::printf("spawn -> console marker PPN-GUEST-READY  p50 %6.0f ms  p99 %6.0f ms\n", Pct(marker_ms, 0.5),
              Pct(marker_ms, 0.99));
  std::printf("spawn -> RUNNING (API)                   p50 %6.0f ms  p99 %6.0f ms\n", Pct(ready_ms, 0.5),
              Pct(ready_ms, 0.99));
  std::printf("RUNNING after the marker (detection)     p50 %6.0f ms  p99 %6.0f ms\n", Pct(overhead_ms, 0.5),
              Pct(overhead_ms, 0.99));
  std::printf("boot_duration the VM reports             p50 %6.0f ms  p99 %6.0f ms\n", Pct(boot_ms, 0.5),
              Pct(boot_ms, 0.99));
  return 0;
}
