// migration_bench: total migration time and guest downtime for idle test guests of 128 and
// 512 MiB between two host agents (in-process VmManagers) on loopback. Not a test.
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
#include "google/protobuf/util/time_util.h"
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
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(dir, std::filesystem::perms(0755));
  std::string g = std::filesystem::absolute(absl::GetFlag(FLAGS_guest));
  for (const char* f : {"vmlinuz", "initramfs.cpio.gz", "base.qcow2"}) {
    std::filesystem::copy_file(g + "/" + f, dir + "/" + f);
    std::filesystem::permissions(dir + "/" + f, std::filesystem::perms(0644));
  }
  if (!ppn::WriteFileAtomically(dir + "/catalog.json",
                                "{\"images\": {\"ppn-test-guest\": {\"base_image\": \"" + dir +
                                    "/base.qcow2\", \"kernel\": \"" + dir + "/vmlinuz\", \"initrd\": \"" + dir +
                                    "/initramfs.cpio.gz\", \"append\": \"console=ttyS0 quiet\"}}}")
           .ok()) {
    return 1;
  }
  auto catalog = *ppn::host::ImageCatalog::Load(dir + "/catalog.json");
  auto store_a = *ppn::host::VmStore::Open(dir + "/a.db");
  auto store_b = *ppn::host::VmStore::Open(dir + "/b.db");
  ppn::host::VmManager::Options oa, ob;
  oa.node_id = "a";
  oa.state_dir = dir + "/a";
  oa.kvm_mode = ppn::host::KvmMode::kOff;
  ob = oa;
  ob.node_id = "b";
  ob.state_dir = dir + "/b";
  ob.port_first = 21000;
  ob.port_last = 21999;
  ppn::PosixProcessSpawner* spawner = ppn::PosixProcessSpawner::Get();
  ppn::host::VmManager a(oa, catalog, {store_a.get(), ppn::RealClock::Get(), spawner});
  ppn::host::VmManager b(ob, catalog, {store_b.get(), ppn::RealClock::Get(), spawner});
  if (!a.Start().ok() || !b.Start().ok()) return 1;
  for (uint32_t mib : {128u, 512u}) {
    std::vector<double> total, down;
    ppn::types::v1::VmSpec spec;
    spec.set_vcpus(1);
    spec.set_memory_mib(mib);
    spec.set_image("ppn-test-guest");
    std::string id = "mig-" + std::to_string(mib);
    auto vm = a.Spawn(ppn::VmId(id), ppn::TenantId("bench"), spec);
    if (!vm.ok()) return 1;
    while (!absl::StrContains(ppn::ReadFile(vm->console_log_path()).value_or(""), "PPN-GUEST-READY"))
      absl::SleepFor(absl::Milliseconds(50));
    ppn::host::VmManager* from = &a;
    ppn::host::VmManager* to = &b;
    for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
      ppn::host::v1::PrepareIncomingRequest prep;
      prep.set_vm_id(id);
      prep.set_tenant_id("bench");
      *prep.mutable_spec() = spec;
      prep.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
      auto prepared = to->PrepareIncoming(prep);
      if (!prepared.ok()) return 1;
      ppn::host::v1::MigrateOutRequest out;
      out.set_vm_id(id);
      out.set_migration_uri(prepared->migration_uri());
      auto done = from->MigrateOut(out, [](const auto&) { return true; });
      if (!done.ok() || done->phase() != ppn::types::v1::MIGRATION_PHASE_COMPLETED) {
        std::fprintf(stderr, "migration failed: %s\n", done.ok() ? done->message().c_str() : "error");
        return 1;
      }
      total.push_back(TimeUtil::DurationToMilliseconds(done->total_time()));
      down.push_back(TimeUtil::DurationToMilliseconds(done->downtime()));
      to->List();  // settles the incoming VM
      std::swap(from, to);
    }
    from->Destroy(id, absl::Seconds(5)).IgnoreError();
    std::printf("idle %u MiB guest, %d migrations: total p50 %.0f ms (max %.0f), downtime p50 %.0f ms (max %.0f)\n",
                mib, absl::GetFlag(FLAGS_runs), Pct(total, 0.5), Pct(total, 1.0), Pct(down, 0.5), Pct(down, 1.0));
  }
  return 0;
}
