// migration_bench: total migration time, guest downtime and stream throughput for idle test
// guests of 128 and 512 MiB and a busy one (rewriting 32 MiB of its memory in a loop while it is
// copied) between two host agents (in-process VmManagers) on loopback, with the
// stream in clear and over QEMU's TLS (the node identities), side by side in one run. The VMs
// use QEMU's user-mode networking in the node's namespace (no --network isolation needed here).
// Not a test.
//
//   bazel build -c opt //host_agent:migration_bench //tools:test_guest
//   bazel-bin/host_agent/migration_bench --guest=bazel-bin/tools/test_guest [--runs=10]

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
#include "google/protobuf/util/time_util.h"
#include "host_agent/testing/bench_guest.h"
#include "host_agent/vm_manager.h"

ABSL_FLAG(std::string, guest, "bazel-bin/tools/test_guest", "Directory of the built test guest");
ABSL_FLAG(int, runs, 10, "Migrations per size");

namespace {

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using google::protobuf::util::TimeUtil;
  std::string dir = "/tmp/ppn-migration-bench";
  absl::StatusOr<ppn::host::ImageCatalog> staged = ppn::host::testing::StageTestGuest(absl::GetFlag(FLAGS_guest), dir);
  if (!staged.ok()) {
    std::fprintf(stderr, "%s\n", std::string(staged.status().message()).c_str());
    return 1;
  }
  ppn::host::ImageCatalog catalog = *std::move(staged);
  // The nodes' identities, as pairing would grant them: CN and DNS name are the node id.
  auto ca = *ppn::x509::MakeCa("ppn.bench", absl::Hours(1));
  if (!ppn::WriteFileAtomically(dir + "/ca.pem", ca.cert_pem).ok()) return 1;
  for (const char* node : {"a", "b"}) {
    ppn::x509::CertRequest req;
    req.common_name = node;
    req.dns_names = {node};
    req.ips = {"127.0.0.1"};
    req.validity = absl::Hours(1);
    req.spiffe_id = std::string("spiffe://ppn.bench/host/") + node;
    auto id = *ppn::x509::Issue(ca, req);
    if (!ppn::WriteFileAtomically(dir + "/" + node + ".pem", id.cert_pem).ok() ||
        !ppn::WriteFileAtomically(dir + "/" + node + ".key", id.key_pem, 0600).ok()) {
      return 1;
    }
  }
  ppn::PosixProcessSpawner* spawner = ppn::PosixProcessSpawner::Get();
  std::vector<std::unique_ptr<ppn::host::VmStore>> stores;
  // Side by side in one run: the same pair of nodes with the stream in clear and over QEMU's TLS.
  for (bool tls : {false, true}) {
    std::string tag = tls ? "tls" : "clear";
    ppn::host::VmManager::Options oa, ob;
    oa.node_id = "a";
    oa.state_dir = dir + "/a-" + tag;
    oa.kvm_mode = ppn::host::KvmMode::kOff;
    oa.port_first = tls ? 22000 : 20000;
    oa.port_last = oa.port_first + 999;
    ob = oa;
    ob.node_id = "b";
    ob.state_dir = dir + "/b-" + tag;
    ob.port_first = oa.port_first + 1000;
    ob.port_last = ob.port_first + 999;
    if (tls) {
      oa.migration_tls = {dir + "/ca.pem", dir + "/a.pem", dir + "/a.key"};
      ob.migration_tls = {dir + "/ca.pem", dir + "/b.pem", dir + "/b.key"};
    }
    stores.push_back(*ppn::host::VmStore::Open(dir + "/a-" + tag + ".db"));
    ppn::host::VmManager a(oa, catalog, {stores.back().get(), ppn::RealClock::Get(), spawner});
    stores.push_back(*ppn::host::VmStore::Open(dir + "/b-" + tag + ".db"));
    ppn::host::VmManager b(ob, catalog, {stores.back().get(), ppn::RealClock::Get(), spawner});
    if (!a.Start().ok() || !b.Start().ok()) return 1;
    struct Guest {
      uint32_t mib, busy_mib;
    };
    for (Guest guest : {Guest{128, 0}, Guest{512, 0}, Guest{128, 32}}) {
      const uint32_t mib = guest.mib;
      std::vector<double> total, down, mbps;
      ppn::types::v1::VmSpec spec;
      spec.set_display_name("bench");
      spec.set_vcpus(1);
      spec.set_memory_mib(mib);
      spec.set_image("ppn-test-guest");
      if (guest.busy_mib > 0) spec.set_user_data("#ppn-busy " + std::to_string(guest.busy_mib) + "\n");
      std::string id = "mig-" + std::to_string(mib) + "-" + std::to_string(guest.busy_mib);
      auto vm = a.Spawn(ppn::VmId(id), ppn::TenantId("bench"), spec);
      if (!vm.ok()) {
        std::fprintf(stderr, "spawn failed: %s\n", std::string(vm.status().message()).c_str());
        return 1;
      }
      const std::string ready = guest.busy_mib > 0 ? "PPN-BUSY" : "PPN-GUEST-READY";
      while (!absl::StrContains(ppn::ReadFile(vm->console_log_path()).value_or(""), ready))
        absl::SleepFor(absl::Milliseconds(50));
      ppn::host::VmManager* from = &a;
      ppn::host::VmManager* to = &b;
      for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
        ppn::host::v1::PrepareIncomingRequest prep;
        prep.set_vm_id(id);
        prep.set_tenant_id("bench");
        *prep.mutable_spec() = spec;
        prep.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
        prep.set_source_node_id(from == &a ? "a" : "b");
        auto prepared = to->PrepareIncoming(prep);
        if (!prepared.ok()) {
          std::fprintf(stderr, "prepare failed: %s\n", std::string(prepared.status().message()).c_str());
          return 1;
        }
        ppn::host::v1::MigrateOutRequest out;
        out.set_vm_id(id);
        out.set_migration_uri(prepared->migration_uri());
        out.set_migration_ticket(prepared->migration_ticket());
        out.set_target_node_id(to == &a ? "a" : "b");
        auto done = from->MigrateOut(out, [](const auto&) { return true; });
        if (!done.ok() || done->phase() != ppn::types::v1::MIGRATION_PHASE_COMPLETED) {
          std::fprintf(stderr, "migration failed: %s\n", done.ok() ? done->message().c_str() : "error");
          return 1;
        }
        double ms = TimeUtil::DurationToMilliseconds(done->total_time());
        total.push_back(ms);
        down.push_back(TimeUtil::DurationToMilliseconds(done->downtime()));
        mbps.push_back(ms > 0 ? done->transferred_bytes() * 8.0 / 1e6 / (ms / 1000.0) : 0);
        for (int w = 0; w < 100; ++w) {  // the target settles the incoming VM
          bool running = false;
          for (const auto& v : to->List()) running |= v.vm_id() == id && v.state() == ppn::types::v1::VM_STATE_RUNNING;
          if (running) break;
          absl::SleepFor(absl::Milliseconds(20));
        }
        std::swap(from, to);
      }
      from->Destroy(id, absl::Seconds(5)).IgnoreError();
      std::printf(
          "%-5s %s %u MiB guest, %d migrations: total p50 %.0f ms (max %.0f), downtime p50 %.0f ms (max %.0f), "
          "throughput p50 %.0f Mbit/s\n",
          tag.c_str(), guest.busy_mib > 0 ? "busy" : "idle", mib, absl::GetFlag(FLAGS_runs), Pct(total, 0.5),
          Pct(total, 1.0), Pct(down, 0.5), Pct(down, 1.0), Pct(mbps, 0.5));
    }
  }
  return 0;
}
