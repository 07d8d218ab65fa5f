#include "host_agent/vm_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "tests/fakes/fake_process_spawner.h"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

ppn::types::v1::VmSpec Spec() {
  ppn::types::v1::VmSpec spec;
  spec.set_display_name("web-one");
  spec.set_vcpus(1);
  spec.set_memory_mib(128);
  spec.set_image("ppn-test-guest");
  return spec;
}

Image TestImage(const std::string& dir) {
  Image image;
  image.name = "ppn-test-guest";
  image.base_image = dir + "/base.qcow2";
  return image;
}

TEST_CASE("the seed names the VM and carries the keys when there is no user data", "[host_agent][vm_files]") {
  ppn::types::v1::VmSpec spec = Spec();
  spec.add_ssh_authorized_keys("ssh-ed25519 AAAA \"quoted\"\nuser@host");
  SeedFiles seed = BuildSeed("vm-1", spec);
  CHECK(seed.meta_data == "instance-id: vm-1\nlocal-hostname: web-one\n");
  CHECK(seed.user_data == "#cloud-config\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAA \\\"quoted\\\"user@host\"\n");
  CHECK(seed.vendor_data.empty());
  spec.clear_display_name();
  CHECK(BuildSeed("vm-1", spec).meta_data == "instance-id: vm-1\nlocal-hostname: vm-1\n");
}

TEST_CASE("user data and ssh keys given together both reach the seed", "[host_agent][vm_files]") {
  ppn::types::v1::VmSpec spec = Spec();
  spec.set_user_data("#!/bin/sh\necho hi\n");
  SeedFiles alone = BuildSeed("vm-1", spec);
  CHECK(alone.user_data == "#!/bin/sh\necho hi\n");
  CHECK(alone.vendor_data.empty());
  spec.add_ssh_authorized_keys("ssh-ed25519 AAAA k1");
  SeedFiles both = BuildSeed("vm-1", spec);
  CHECK(both.user_data == "#!/bin/sh\necho hi\n");
  CHECK(both.vendor_data == "#cloud-config\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAA k1\"\n");
}

TEST_CASE("a VM directory holds the overlay on its image and a seed ISO of its files", "[host_agent][vm_files]") {
  testing::TempDir tmp;
  testing::FakeProcessSpawner spawner;
  std::map<std::string, std::string> seed_dir;
  spawner.OnRun("genisoimage", [&](const SpawnSpec& spec) -> absl::StatusOr<RunResult> {
    for (const auto& e : std::filesystem::directory_iterator(spec.argv.back())) {
      seed_dir[e.path().filename().string()] = ReadFile(e.path().string()).value_or("");
    }
    WriteFileAtomically(spec.argv[3], "iso").IgnoreError();
    return RunResult{0, false, ""};
  });
  spawner.OnRun("qemu-img", [](const SpawnSpec& spec) -> absl::StatusOr<RunResult> {
    WriteFileAtomically(spec.argv[9], "qcow2").IgnoreError();
    return RunResult{0, false, ""};
  });
  VmFiles files(&spawner, tmp.File("vms"), std::nullopt);
  ppn::types::v1::VmSpec spec = Spec();
  spec.set_disk_gib(3);
  spec.set_user_data("#cloud-config\n");
  spec.add_ssh_authorized_keys("ssh-ed25519 AAAA k1");
  REQUIRE(files.Create("vm-1", TestImage(tmp.path()), spec).ok());
  std::string dir = files.Dir("vm-1");
  CHECK(dir == tmp.File("vms/vm-1"));
  REQUIRE(spawner.runs().size() == 2);
  CHECK(spawner.runs()[0].argv == std::vector<std::string>{"qemu-img", "create", "-q", "-f", "qcow2", "-b",
                                                           tmp.File("base.qcow2"), "-F", "qcow2", DiskPath(dir), "3G"});
  CHECK(seed_dir.size() == 3);
  CHECK(seed_dir["user-data"] == "#cloud-config\n");
  CHECK(absl::StrContains(seed_dir["vendor-data"], "ssh-ed25519 AAAA k1"));
  CHECK(std::filesystem::exists(SeedPath(dir)));
  CHECK_FALSE(std::filesystem::exists(dir + "/seed"));  // user data is not left lying around
  CHECK(files.ListVmIds() == std::vector<std::string>{"vm-1"});
  CHECK(files.DiskVirtualBytes(TestImage(tmp.path()), spec).value() == uint64_t{3} << 30);
  CHECK(files.DiskAllocatedBytes("vm-1") > 0);
  CHECK(files.DiskAllocatedBytes("vm-2") == 0);
  files.Remove("vm-1");
  CHECK_FALSE(std::filesystem::exists(dir));
  CHECK(files.ListVmIds().empty());
}

TEST_CASE("a tool that refuses leaves no VM directory and says why", "[host_agent][vm_files]") {
  testing::TempDir tmp;
  testing::FakeProcessSpawner spawner;
  spawner.OnRun("qemu-img", [](const SpawnSpec&) -> absl::StatusOr<RunResult> {
    return RunResult{1, false, "Could not open backing file"};
  });
  VmFiles files(&spawner, tmp.File("vms"), std::nullopt);
  absl::Status s = files.Create("vm-1", TestImage(tmp.path()), Spec());
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.message() ==
        "cannot create the disk overlay on image ppn-test-guest: qemu-img failed: Could not open backing file");
  CHECK_FALSE(std::filesystem::exists(files.Dir("vm-1")));
}

TEST_CASE("an image's virtual size is asked of qemu-img once", "[host_agent][vm_files]") {
  testing::TempDir tmp;
  testing::FakeProcessSpawner spawner;
  spawner.OnRun("qemu-img", [](const SpawnSpec&) -> absl::StatusOr<RunResult> {
    return RunResult{0, false, "{\"virtual-size\": 268435456, \"format\": \"qcow2\"}"};
  });
  VmFiles files(&spawner, tmp.File("vms"), std::nullopt);
  CHECK(files.DiskVirtualBytes(TestImage(tmp.path()), Spec()).value() == 268435456);
  CHECK(files.DiskVirtualBytes(TestImage(tmp.path()), Spec()).value() == 268435456);
  CHECK(spawner.runs().size() == 1);
  CHECK(spawner.runs()[0].argv.back() == tmp.File("base.qcow2"));
}

TEST_CASE("with the real tools the overlay and the seed are made and handed to the QEMU user",
          "[host_agent][vm_files]") {
  testing::TempDir tmp;
  PosixProcessSpawner spawner;
  REQUIRE(RunTool(&spawner, {"qemu-img", "create", "-q", "-f", "qcow2", tmp.File("base.qcow2"), "64M"}).ok());
  std::optional<RunAs> owner;
  if (geteuid() == 0) owner = LookupUser("nobody").value();
  VmFiles files(&spawner, tmp.File("vms"), owner);
  REQUIRE(files.Create("vm-1", TestImage(tmp.path()), Spec()).ok());
  CHECK(files.DiskVirtualBytes(TestImage(tmp.path()), Spec()).value() == uint64_t{64} << 20);
  struct stat st;
  REQUIRE(stat(SeedPath(files.Dir("vm-1")).c_str(), &st) == 0);
  CHECK(st.st_size > 0);
  if (owner) CHECK(st.st_uid == owner->uid);
}

}  // namespace
}  // namespace ppn::host
