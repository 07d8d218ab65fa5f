// host_agent_bench: spawn → guest ready marker, p50/p99 over --runs; the agent's own overhead
// (Spawn entered → QEMU exec'd); the idle agent's RSS. Not a test.
//
//   bazel build -c opt //host_agent:host_agent_bench //tools:test_guest //host_agent
//   bazel-bin/host_agent/host_agent_bench --guest=bazel-bin/tools/test_guest --agent=bazel-bin/host_agent/host_agent

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/process.h"
#include "common/x509.h"
#include "host_agent/testing/bench_guest.h"
#include "host_agent/vm_manager.h"

ABSL_FLAG(std::string, guest, "bazel-bin/tools/test_guest", "Directory of the built test guest");
ABSL_FLAG(std::string, agent, "bazel-bin/host_agent/host_agent", "host_agent binary (for idle RSS)");
ABSL_FLAG(int, runs, 20, "Spawns to measure");

namespace {

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}
}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string dir = "/tmp/ppn-agent-bench";
  if (absl::Status staged = ppn::host::testing::StageTestGuest(absl::GetFlag(FLAGS_guest), dir).status();
      !staged.ok()) {
    std::fprintf(stderr, "%s\n", std::string(staged.message()).c_str());
    return 1;
  }

  {
    auto store = *ppn::host::VmStore::Open(dir + "/agent.db");
    ppn::host::VmManager::Options options;
    options.state_dir = dir + "/state";
    options.kvm_mode = ppn::host::KvmMode::kAuto;
    ppn::host::VmManager manager(options, *ppn::host::ImageCatalog::Load(dir + "/catalog.json"),
                                 {store.get(), ppn::RealClock::Get(), ppn::PosixProcessSpawner::Get()});
    if (!manager.Start().ok()) return 1;
    std::vector<double> ready_ms, spawn_ms, overhead_ms;
    for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
      ppn::types::v1::VmSpec spec;
      spec.set_vcpus(1);
      spec.set_memory_mib(128);
      spec.set_image("ppn-test-guest");
      spec.add_port_forwards()->set_guest_port(80);
      std::string id = "bench-" + std::to_string(i);
      absl::Time t0 = absl::Now();
      auto vm = manager.Spawn(ppn::VmId(id), ppn::TenantId("bench"), spec);
      if (!vm.ok()) {
        std::fprintf(stderr, "spawn failed: %s\n", std::string(vm.status().message()).c_str());
        return 1;
      }
      spawn_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      overhead_ms.push_back(absl::ToDoubleMilliseconds(manager.LastSpawnOverheadForTest()));
      while (!absl::StrContains(ppn::ReadFile(vm->console_log_path()).value_or(""), "PPN-GUEST-READY")) {
        if (absl::Now() - t0 > absl::Seconds(120)) return 1;
        absl::SleepFor(absl::Milliseconds(10));
      }
      ready_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      manager.Destroy(id, absl::Seconds(5)).IgnoreError();
    }
    std::printf("accelerator: %s\n", manager.kvm_usable() ? "kvm" : "tcg");
    std::printf("spawn -> guest ready marker: p50 %.0f ms, p99 %.0f ms (%d runs)\n", Pct(ready_ms, 0.5),
                Pct(ready_ms, 0.99), absl::GetFlag(FLAGS_runs));
    std::printf("Spawn call (overlay, seed, exec, QMP handshake): p50 %.0f ms, p99 %.0f ms\n", Pct(spawn_ms, 0.5),
                Pct(spawn_ms, 0.99));
    std::printf("agent overhead, Spawn entered -> QEMU exec'd: p50 %.1f ms, p99 %.1f ms\n", Pct(overhead_ms, 0.5),
                Pct(overhead_ms, 0.99));
  }

  // Idle RSS of the real binary with no VMs.
  ppn::x509::Identity ca = *ppn::x509::MakeCa("ppn.bench", absl::Hours(1));
  ppn::x509::CertRequest req;
  req.common_name = "bench";
  req.spiffe_id = "spiffe://ppn.bench/host/bench";
  auto id = *ppn::x509::Issue(ca, req);
  if (!ppn::WriteFileAtomically(dir + "/ca.pem", ca.cert_pem).ok() ||
      !ppn::WriteFileAtomically(dir + "/host.pem", id.cert_pem).ok() ||
      !ppn::WriteFileAtomically(dir + "/host.key", id.key_pem, 0600).ok()) {
    return 1;
  }
  ppn::SpawnSpec agent;
  agent.argv = {absl::GetFlag(FLAGS_agent),           "--mesh=ppn.bench",
                "--tls_ca=" + dir + "/ca.pem",        "--tls_cert=" + dir + "/host.pem",
                "--tls_key=" + dir + "/host.key",     "--state_dir=" + dir + "/idle",
                "--catalog=" + dir + "/catalog.json", "--kvm=off",
                "--port_file=" + dir + "/port",       "--log_level=warn"};
  auto process = ppn::PosixProcessSpawner::Get()->Spawn(agent);
  if (!process.ok()) {
    std::fprintf(stderr, "%s\n", std::string(process.status().message()).c_str());
    return 1;
  }
  for (int i = 0; i < 100 && !std::filesystem::exists(dir + "/port"); ++i) absl::SleepFor(absl::Milliseconds(50));
  absl::SleepFor(absl::Seconds(2));
  std::istringstream status(ppn::ReadFile("/proc/" + std::to_string((*process)->pid()) + "/status").value_or(""));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS") || absl::StartsWith(line, "RssAnon") || absl::StartsWith(line, "RssFile")) {
      std::printf("idle host_agent %s\n", line.c_str());
    }
  }
  (*process)->Signal(SIGTERM);
  (*process)->WaitForExit(absl::Seconds(10));
  return 0;
}
