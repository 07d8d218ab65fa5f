// create_bench: a create restored from its image's template against a cold boot, side by side
// in one run (two in-process VmManagers on one state directory each, the same catalog):
// Spawn → RUNNING (the call's return) and → the guest's forwarded port answering HTTP, p50 and
// p99; then 50 restored creates in a row and 10 at once, none may fail; then the proportional
// memory (PSS) of 10 restored clones against 10 cold-booted VMs. The VMs use QEMU's user-mode
// networking in the node's namespace (no --network isolation needed here). Not a test.
//
//   bazel build -c opt //host_agent:create_bench //tools:test_guest
//   bazel-bin/host_agent/create_bench --guest=bazel-bin/tools/test_guest [--runs=20]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/process.h"
#include "host_agent/testing/bench_guest.h"
#include "host_agent/vm_manager.h"

ABSL_FLAG(std::string, guest, "bazel-bin/tools/test_guest", "Directory of the built test guest");
ABSL_FLAG(int, runs, 20, "Creates per mode, side by side");
ABSL_FLAG(int, in_a_row, 50, "Restored creates in a row");
ABSL_FLAG(int, concurrent, 10, "Restored creates at once");
ABSL_FLAG(bool, pss, true, "Measure PSS of 10 clones against 10 cold boots");

namespace {

using ppn::host::VmManager;
using ppn::host::v1::VmInstance;

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// One HTTP GET of / on 127.0.0.1:port; true when the guest's page came back.
bool Answers(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    const char req[] = "GET / HTTP/1.0\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) == static_cast<ssize_t>(sizeof(req) - 1)) {
      std::string got;
      char buf[1024];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) got.append(buf, static_cast<size_t>(n));
      ok = absl::StrContains(got, "hello from");
    }
  }
  close(fd);
  return ok;
}

struct Sample {
  double running_ms = 0, answers_ms = 0;
  bool ok = false;
  std::string error;
};

Sample CreateOne(VmManager* m, const std::string& id, bool destroy) {
  ppn::types::v1::VmSpec spec;
  spec.set_display_name(id);
  spec.set_vcpus(1);
  spec.set_memory_mib(128);
  spec.set_image("ppn-test-guest");
  spec.add_port_forwards()->set_guest_port(80);
  Sample s;
  absl::Time t0 = absl::Now();
  absl::StatusOr<VmInstance> vm = m->Spawn(ppn::VmId(id), ppn::TenantId("bench"), spec);
  if (!vm.ok()) {
    s.error = std::string(vm.status().message());
    return s;
  }
  s.running_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  int port = static_cast<int>(vm->forwarded_ports(0).host_port());
  while (!Answers(port)) {
    if (absl::Now() - t0 > absl::Seconds(120)) {
      s.error = "the guest never answered";
      return s;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  s.answers_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  s.ok = true;
  if (destroy) m->Destroy(id, absl::Seconds(2)).IgnoreError();
  return s;
}

uint64_t PssKib(pid_t pid) {
  std::istringstream in(ppn::ReadFile(absl::StrCat("/proc/", pid, "/smaps_rollup")).value_or(""));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "Pss:")) {
      std::string v = line.substr(4);
      v.erase(std::remove(v.begin(), v.end(), ' '), v.end());
      uint64_t kib = 0;
      if (absl::SimpleAtoi(v.substr(0, v.find('k')), &kib)) return kib;
    }
  }
  return 0;
}

void Report(const char* what, const std::vector<Sample>& samples) {
  std::vector<double> running, answers;
  int failed = 0;
  for (const Sample& s : samples) {
    if (!s.ok) {
      ++failed;
      continue;
    }
    running.push_back(s.running_ms);
    answers.push_back(s.answers_ms);
  }
  if (running.empty()) {
    std::printf("%s: all %zu failed (%s)\n", what, samples.size(), samples[0].error.c_str());
    return;
  }
  std::printf(
      "%-34s -> RUNNING p50 %6.0f ms p99 %6.0f ms | -> port answers p50 %6.0f ms p99 %6.0f ms | %zu ok, %d failed\n",
      what, Pct(running, 0.5), Pct(running, 0.99), Pct(answers, 0.5), Pct(answers, 0.99), running.size(), failed);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string dir = "/tmp/ppn-create-bench";
  if (absl::Status staged =
          ppn::host::testing::StageTestGuest(absl::GetFlag(FLAGS_guest), dir, "console=ttyS0 panic=-1 quiet").status();
      !staged.ok()) {
    std::fprintf(stderr, "%s\n", std::string(staged.message()).c_str());
    return 1;
  }

  auto make = [&](const std::string& name, bool templates, uint32_t first_port) {
    VmManager::Options o;
    o.node_id = name;
    o.state_dir = dir + "/" + name;
    o.kvm_mode = ppn::host::KvmMode::kAuto;
    o.port_first = first_port;
    o.port_last = first_port + 199;
    o.advertised_memory_mib = 16384;  // clones share their template's pages; 10 at once fit
    o.templates = templates;
    auto store = *ppn::host::VmStore::Open(dir + "/" + name + ".db");
    auto m = std::make_unique<VmManager>(
        o, *ppn::host::ImageCatalog::Load(dir + "/catalog.json"),
        VmManager::Deps{store.get(), ppn::RealClock::Get(), ppn::PosixProcessSpawner::Get()});
    return std::make_pair(std::move(store), std::move(m));
  };
  auto [cold_store, cold] = make("cold", false, 24200);
  auto [warm_store, warm] = make("restore", true, 24400);
  if (!cold->Start().ok() || !warm->Start().ok()) return 1;
  std::printf("accelerator: %s; %d runs per mode, idle 1 vCPU / 128 MiB test guests\n",
              warm->kvm_usable() ? "kvm" : "tcg", absl::GetFlag(FLAGS_runs));

  absl::Time t0 = absl::Now();
  absl::StatusOr<ppn::host::Template> t = warm->EnsureTemplate("ppn-test-guest", 1, 128);
  if (!t.ok()) {
    std::fprintf(stderr, "no template: %s\n", std::string(t.status().message()).c_str());
    return 1;
  }
  std::printf("template made once: %.0f ms (boot to ready, save, install)\n",
              absl::ToDoubleMilliseconds(absl::Now() - t0));

  std::vector<Sample> cold_samples, warm_samples;
  for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
    cold_samples.push_back(CreateOne(cold.get(), absl::StrCat("cold-", i), true));
    warm_samples.push_back(CreateOne(warm.get(), absl::StrCat("warm-", i), true));
  }
  Report("cold boot", cold_samples);
  Report("restore from template", warm_samples);
  std::printf("speed-up to port answering (p50): %.1fx\n", [&] {
    std::vector<double> c, w;
    for (const auto& s : cold_samples)
      if (s.ok) c.push_back(s.answers_ms);
    for (const auto& s : warm_samples)
      if (s.ok) w.push_back(s.answers_ms);
    return c.empty() || w.empty() ? 0.0 : Pct(c, 0.5) / Pct(w, 0.5);
  }());

  std::vector<Sample> row;
  for (int i = 0; i < absl::GetFlag(FLAGS_in_a_row); ++i)
    row.push_back(CreateOne(warm.get(), absl::StrCat("row-", i), true));
  Report(absl::StrCat(absl::GetFlag(FLAGS_in_a_row), " restored creates in a row").c_str(), row);

  int n = absl::GetFlag(FLAGS_concurrent);
  std::vector<Sample> together(n);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] { together[i] = CreateOne(warm.get(), absl::StrCat("together-", i), false); });
    }
    for (auto& th : threads) th.join();
  }
  Report(absl::StrCat(n, " restored creates at once").c_str(), together);

  if (absl::GetFlag(FLAGS_pss)) {
    // The 10 clones above run on; 10 cold-booted VMs beside them, each idle after answering.
    std::vector<Sample> boots(n);
    for (int i = 0; i < n; ++i) boots[i] = CreateOne(cold.get(), absl::StrCat("boot-", i), false);
    absl::SleepFor(absl::Seconds(2));
    auto total = [](VmManager* m, const std::string& prefix) {
      uint64_t kib = 0;
      int count = 0;
      for (const VmInstance& vm : m->List()) {
        if (absl::StartsWith(vm.vm_id(), prefix) && vm.pid() > 0) {
          kib += PssKib(vm.pid());
          ++count;
        }
      }
      return std::make_pair(kib, count);
    };
    auto [clone_kib, clones] = total(warm.get(), "together-");
    auto [boot_kib, booted] = total(cold.get(), "boot-");
    std::printf(
        "PSS of %d restored clones: %.0f MiB (%.1f MiB each); of %d cold-booted VMs: %.0f MiB (%.1f MiB each)\n",
        clones, clone_kib / 1024.0, clones ? clone_kib / 1024.0 / clones : 0.0, booted, boot_kib / 1024.0,
        booted ? boot_kib / 1024.0 / booted : 0.0);
  }
  for (const VmInstance& vm : warm->List()) warm->Destroy(vm.vm_id(), absl::Seconds(2)).IgnoreError();
  for (const VmInstance& vm : cold->List()) cold->Destroy(vm.vm_id(), absl::Seconds(2)).IgnoreError();
  return 0;
}
