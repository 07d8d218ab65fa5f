#include "host_agent/qemu_launcher.h"

#include <algorithm>
#include <filesystem>

#include "catch2/catch.hpp"
#include "common/files.h"
#include "tests/fakes/fake_process_spawner.h"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

LaunchSpec Spec() {
  LaunchSpec spec;
  spec.vm_id = "vm-1";
  spec.vm_dir = "/state/vms/vm-1";
  spec.image.name = "ppn-test-guest";
  spec.image.kernel = "/images/vmlinuz";
  spec.forwards.push_back({"127.0.0.1", 20001, 80, false});
  spec.run_as_user = "nobody";
  spec.incoming = true;
  spec.tls_dir = "/state/qemu-tls";
  spec.netns = "ppn.laptop-a.vm-1";
  return spec;
}

bool Has(const std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag && argv[i + 1] == value) return true;
  }
  return false;
}

TEST_CASE("the QEMU command line names the VM and carries its files, forwards and migration",
          "[host_agent][qemu_launcher]") {
  std::vector<std::string> argv = BuildQemuArgs(Spec());
  CHECK(argv[0] == "qemu-system-x86_64");
  CHECK(Has(argv, "-name", "ppn-vm-1"));
  CHECK(Has(argv, "-qmp", "unix:/state/vms/vm-1/qmp.sock,server=on,wait=off"));
  CHECK(Has(argv, "-netdev", "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:20001-:80"));
  CHECK(Has(argv, "-runas", "nobody"));
  // A migration target waits for the stream its agent hands it, over TLS with the node's identity.
  CHECK(Has(argv, "-incoming", "defer"));
  CHECK(Has(argv, "-object", "tls-creds-x509,id=tls-server,endpoint=server,verify-peer=on,dir=/state/qemu-tls"));
  CHECK(Has(argv, "-object", "tls-creds-x509,id=tls-client,endpoint=client,dir=/state/qemu-tls"));
  CHECK(Has(argv, "-machine", "q35,accel=tcg,memory-backend=ram0"));
  CHECK(Has(argv, "-object", "memory-backend-ram,id=ram0,size=128M"));
  CHECK(Has(argv, "-chardev", "socket,id=identity0,path=/state/vms/vm-1/identity.sock,server=on,wait=off"));
  CHECK(Has(argv, "-device", "vmgenid,guid=auto"));
}

TEST_CASE("a clone maps its template's memory privately and keeps the template's devices",
          "[host_agent][qemu_launcher]") {
  LaunchSpec spec = Spec();
  spec.memory_file = "/state/templates/k/memory";
  spec.seed_path = "/state/templates/k/seed.iso";
  spec.vmgenid = "3f2a0c4e-0000-4000-8000-000000000001";
  std::vector<std::string> argv = BuildQemuArgs(spec);
  CHECK(Has(argv, "-object", "memory-backend-file,id=ram0,size=128M,mem-path=/state/templates/k/memory,share=off"));
  CHECK(Has(argv, "-drive", "file=/state/templates/k/seed.iso,if=none,id=seed0,format=raw,readonly=on"));
  CHECK(Has(argv, "-device", "vmgenid,guid=3f2a0c4e-0000-4000-8000-000000000001"));
  spec.memory_shared = true;  // the template being made
  CHECK(Has(BuildQemuArgs(spec), "-object",
            "memory-backend-file,id=ram0,size=128M,mem-path=/state/templates/k/memory,share=on"));
  std::vector<std::string> devices, plain_devices;
  LaunchSpec plain = Spec();
  for (const auto& [argv_of, out] :
       {std::pair{BuildQemuArgs(spec), &devices}, {BuildQemuArgs(plain), &plain_devices}}) {
    for (size_t i = 0; i + 1 < argv_of.size(); ++i) {
      if (argv_of[i] == "-device" && argv_of[i + 1].rfind("vmgenid", 0) != 0) out->push_back(argv_of[i + 1]);
    }
  }
  CHECK(devices == plain_devices);
}

TEST_CASE("each private network's tap becomes a NIC after the first, with the VM's MAC on it",
          "[host_agent][qemu_launcher]") {
  LaunchSpec spec = Spec();
  std::vector<std::string> plain = BuildQemuArgs(spec);
  CHECK(std::count(plain.begin(), plain.end(), "-netdev") == 1);
  spec.taps = {{"pt0", "02:aa:bb:cc:dd:ee"}};
  std::vector<std::string> argv = BuildQemuArgs(spec);
  CHECK(Has(argv, "-netdev", "tap,id=priv0,ifname=pt0,script=no,downscript=no"));
  CHECK(Has(argv, "-device", "virtio-net-pci,netdev=priv0,mac=02:aa:bb:cc:dd:ee,romfile="));
  // The user-mode NIC stays first: the guest's eth0, its default MAC the network-config names.
  auto first = std::find(argv.begin(), argv.end(), "virtio-net-pci,netdev=net0,romfile=");
  auto second = std::find(argv.begin(), argv.end(), "virtio-net-pci,netdev=priv0,mac=02:aa:bb:cc:dd:ee,romfile=");
  CHECK(first < second);
}

TEST_CASE("a QEMU process is recognised as a VM of this state directory only", "[host_agent][qemu_launcher]") {
  std::vector<std::string> argv = BuildQemuArgs(Spec());
  CHECK(QemuVmId(argv, "/state/vms") == std::optional<std::string>("vm-1"));
  CHECK(QemuVmId(argv, "/other/vms") == std::nullopt);
  CHECK(QemuVmId({"qemu-system-x86_64", "-name", "guest"}, "/state/vms") == std::nullopt);
  CHECK(QemuVmId({"sleep", "100"}, "/state/vms") == std::nullopt);
}

TEST_CASE("QEMU is started in its own session with its log beside its files", "[host_agent][qemu_launcher]") {
  testing::FakeProcessSpawner spawner;
  LaunchSpec spec = Spec();
  spec.cgroup_dir = "/sys/fs/cgroup/ppn-node/vm-1";
  REQUIRE(LaunchQemu(&spawner, spec).ok());
  REQUIRE(spawner.spawned().size() == 1);
  const SpawnSpec started = spawner.spawned()[0];
  CHECK(started.argv == BuildQemuArgs(spec));
  CHECK(started.new_session);
  CHECK(started.output_path == "/state/vms/vm-1/qemu.log");
  CHECK(started.cgroup_dir == "/sys/fs/cgroup/ppn-node/vm-1");
  CHECK(started.netns == "ppn.laptop-a.vm-1");  // QEMU lives in the VM's network namespace
  CHECK_FALSE(started.run_as.has_value());      // QEMU drops privileges itself, after opening its files
}

}  // namespace
}  // namespace ppn::host

namespace ppn::host {
namespace {

std::string Slurp(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? *text : "<missing>";
}

TEST_CASE("every VM's balloon reports statistics and gives pages back before the guest's OOM killer runs",
          "[host_agent][qemu_launcher]") {
  CHECK(Has(BuildQemuArgs(Spec()), "-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on"));
}

TEST_CASE("a VM with max_memory_mib gets a virtio-mem device holding the memory above its size",
          "[host_agent][qemu_launcher]") {
  LaunchSpec spec = Spec();
  spec.memory_mib = 256;
  std::vector<std::string> plain = BuildQemuArgs(spec);
  CHECK(Has(plain, "-m", "256"));
  CHECK_FALSE(Has(plain, "-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-ram,requested-size=0"));
  spec.max_memory_mib = 1024;
  std::vector<std::string> argv = BuildQemuArgs(spec);
  CHECK(Has(argv, "-m", "256M,maxmem=1024M"));
  CHECK(Has(argv, "-object", "memory-backend-ram,id=vmem0-ram,size=768M"));
  CHECK(Has(argv, "-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-ram,requested-size=0"));
}

TEST_CASE("a VM's cgroup v2 gets cpu.weight by its vCPUs and memory.max of its memory and QEMU's",
          "[host_agent][qemu_launcher][cgroup]") {
  // A temporary directory stands in for the agent's cgroup v2 subtree.
  ppn::testing::TempDir root;
  LaunchSpec spec = Spec();
  spec.vcpus = 3;
  spec.memory_mib = 512;
  // The kernel makes a cgroup's control files with its directory; the stand-in makes them here,
  // and CreateVmCgroup never creates a file of its own (a missing controller is an error).
  std::filesystem::create_directory(root.File("vm-1"));
  for (const char* f : {"cpu.weight", "memory.max", "pids.max"})
    REQUIRE(WriteFileAtomically(root.File(std::string("vm-1/") + f), "", 0644).ok());
  absl::StatusOr<std::string> dir = CreateVmCgroup(root.path(), spec);
  REQUIRE(dir.ok());
  CHECK(*dir == root.File("vm-1"));
  CHECK(Slurp(*dir + "/cpu.weight") == "300");
  CHECK(Slurp(*dir + "/memory.max") == std::to_string((512 + 256) << 20));
  CHECK(Slurp(*dir + "/pids.max") == "512");

  SECTION("a hierarchy it cannot create cgroups in is refused") {
    CHECK(CreateVmCgroup(root.File("missing/deeper"), spec).status().code() == absl::StatusCode::kPermissionDenied);
  }
  SECTION("a cgroup without the memory controller is refused and removed") {
    LaunchSpec other = spec;
    other.vm_id = "vm-2";
    CHECK(CreateVmCgroup(root.path(), other).status().code() == absl::StatusCode::kPermissionDenied);
    CHECK_FALSE(std::filesystem::exists(root.File("vm-2")));
  }
}

}  // namespace
}  // namespace ppn::host
