// Creates that restore a per-image template, against a fake QEMU whose guests speak the
// identity channel: the template is made once, clones get their own identity and files, and a
// template that cannot be made or is damaged never yields a guest with garbage memory.

#include <filesystem>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "host_agent/testing/vm_manager_rig.h"
#include "host_agent/vm_manager.h"

namespace ppn::host {
namespace {

using ppn::host::v1::VmInstance;
using ppn::types::v1::VmSpec;
using testing::Node;
using testing::Spec;

std::vector<std::vector<std::string>> QemuArgvs(Node& node) {
  std::vector<std::vector<std::string>> out;
  for (const SpawnSpec& s : node.spawner.spawned()) {
    if (s.argv[0] == "qemu-system-x86_64") out.push_back(s.argv);
  }
  return out;
}

std::vector<std::string> ArgvOf(Node& node, const std::string& vm_id) {
  for (const std::vector<std::string>& argv : QemuArgvs(node)) {
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "-name" && argv[i + 1] == "ppn-" + vm_id) return argv;
    }
  }
  return {};
}

bool HasArgContaining(const std::vector<std::string>& argv, const std::string& part) {
  for (const std::string& a : argv) {
    if (absl::StrContains(a, part)) return true;
  }
  return false;
}

std::vector<std::string> TemplateDirs(Node& node) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(node.state() + "/templates", ec)) {
    if (e.path().filename().string()[0] != '.') out.push_back(e.path().string());
  }
  return out;
}

// Waits until `node` has `n` templates installed.
bool WaitForTemplates(Node& node, size_t n) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (TemplateDirs(node).size() != n && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  return TemplateDirs(node).size() == n;
}

TEST_CASE("a first create boots while its template is made in the background, and the next restores",
          "[host_agent][vm_manager][templates]") {
  Node node;
  node.templates = true;
  node.Start();
  absl::StatusOr<VmInstance> first = node.Spawn("vm-1");
  REQUIRE(first.ok());
  CHECK(first->state_message() == "cold boot: no template of image ppn-test-guest: it is being made");
  REQUIRE(WaitForTemplates(node, 1));
  VmSpec other = Spec();
  other.set_display_name("web-two");
  absl::StatusOr<VmInstance> second = node.Spawn("vm-2", "acme", other);
  REQUIRE(second.ok());
  CHECK(absl::StartsWith(second->state_message(), "restored from template "));
  CHECK(QemuArgvs(node).size() == 3);  // vm-1's boot, the template's, vm-2's restore
  CHECK(node.Records().size() == 2);
}

TEST_CASE("creates restore their image's template, made once, and each clone has its own identity",
          "[host_agent][vm_manager][templates]") {
  Node node;
  node.templates = true;
  node.Start();
  REQUIRE(node.manager->EnsureTemplate("ppn-test-guest", 1, 128).ok());
  absl::StatusOr<VmInstance> one = node.Spawn("vm-1");
  INFO(one.status().message());
  REQUIRE(one.ok());
  CHECK(one->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(absl::StartsWith(one->state_message(), "restored from template "));
  std::vector<std::vector<std::string>> argvs = QemuArgvs(node);
  REQUIRE(argvs.size() == 2);  // the template's boot, then the clone
  CHECK(HasArgContaining(argvs[0], ",share=on"));
  CHECK(HasArgContaining(argvs[0], "restrict=on"));
  CHECK(HasArgContaining(argvs[1], ",share=off"));
  CHECK(HasArgContaining(argvs[1], "vmgenid,guid="));
  CHECK_FALSE(HasArgContaining(argvs[1], "vmgenid,guid=auto"));
  REQUIRE(TemplateDirs(node).size() == 1);
  std::string tmpl = TemplateDirs(node)[0];
  CHECK(std::filesystem::exists(tmpl + "/memory"));
  CHECK(std::filesystem::exists(tmpl + "/manifest.json"));
  CHECK(HasArgContaining(argvs[1], "mem-path=" + tmpl + "/memory"));
  // The template's own boot left no VM behind.
  CHECK(node.Records().size() == 1);

  VmSpec other = Spec();
  other.set_display_name("web-two");
  absl::StatusOr<VmInstance> two = node.Spawn("vm-2", "acme", other);
  REQUIRE(two.ok());
  CHECK(QemuArgvs(node).size() == 3);  // no second template
  std::vector<std::string> id1 = node.qemu.IdentitiesOf("vm-1"), id2 = node.qemu.IdentitiesOf("vm-2");
  REQUIRE(id1.size() == 1);
  REQUIRE(id2.size() == 1);
  CHECK(absl::StartsWith(id1[0], "hostname web-one\nseed "));
  CHECK(absl::StartsWith(id2[0], "hostname web-two\nseed "));
  CHECK(id1[0].substr(id1[0].find("seed "), 70) != id2[0].substr(id2[0].find("seed "), 70));
  CHECK(absl::StrContains(id1[0], "user-data "));
  auto vmgenid = [](const std::vector<std::string>& argv) {
    for (const std::string& a : argv) {
      if (absl::StartsWith(a, "vmgenid,")) return a;
    }
    return std::string();
  };
  CHECK(vmgenid(QemuArgvs(node)[1]) != vmgenid(QemuArgvs(node)[2]));

  SECTION("destroy removes the clone's files, never the template") {
    REQUIRE(node.manager->Destroy("vm-1", absl::Seconds(1)).ok());
    CHECK_FALSE(std::filesystem::exists(node.VmDir("vm-1")));
    CHECK(std::filesystem::exists(tmpl + "/memory"));
    CHECK(node.manager->Spawn(VmId("vm-3"), TenantId("acme"), Spec()).ok());
    CHECK(QemuArgvs(node).size() == 4);
  }
  SECTION("an agent restart keeps its templates and re-adopts restored VMs") {
    node.Restart();
    std::vector<VmInstance> vms = node.manager->List();
    REQUIRE(vms.size() == 2);
    for (const VmInstance& vm : vms) CHECK(vm.state() == ppn::types::v1::VM_STATE_RUNNING);
    REQUIRE(node.manager->Spawn(VmId("vm-3"), TenantId("acme"), Spec()).ok());
    CHECK(QemuArgvs(node).size() == 4);  // the template survived the restart
  }
  SECTION("a deleted or corrupted template file makes the create boot, never clone garbage, and a new template") {
    SECTION("deleted memory") { std::filesystem::remove(tmpl + "/memory"); }
    SECTION("corrupted state") { REQUIRE(WriteFileAtomically(tmpl + "/state", "garbage").ok()); }
    absl::StatusOr<VmInstance> three = node.manager->Spawn(VmId("vm-3"), TenantId("acme"), Spec());
    REQUIRE(three.ok());
    CHECK(absl::StartsWith(three->state_message(), "cold boot: no template of image ppn-test-guest: template "));
    CHECK(absl::StrContains(three->state_message(), "; it is being made again"));
    REQUIRE_FALSE(ArgvOf(node, "vm-3").empty());
    CHECK_FALSE(HasArgContaining(ArgvOf(node, "vm-3"), "memory-backend-file"));
    REQUIRE(WaitForTemplates(node, 1));
    absl::StatusOr<VmInstance> four = node.manager->Spawn(VmId("vm-4"), TenantId("acme"), Spec());
    REQUIRE(four.ok());
    CHECK(absl::StartsWith(four->state_message(), "restored from template "));
    CHECK(std::filesystem::exists(tmpl + "/memory"));
  }
}

TEST_CASE("an image whose guest never says it is ready boots cold and says why",
          "[host_agent][vm_manager][templates]") {
  Node node;
  node.templates = true;
  node.qemu.set_guests_speak_identity(false);
  VmManager* m = node.Start();
  CHECK(absl::StrContains(m->EnsureTemplate("ppn-test-guest", 1, 128).status().message(), "never said it was ready"));
  absl::StatusOr<VmInstance> vm = node.Spawn("vm-1");
  INFO(vm.status().message());
  REQUIRE(vm.ok());
  CHECK(vm->state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(absl::StartsWith(vm->state_message(), "cold boot: no template of image ppn-test-guest: "));
  CHECK(absl::StrContains(vm->state_message(), "never said it was ready"));
  std::vector<std::vector<std::string>> argvs = QemuArgvs(node);
  REQUIRE(argvs.size() == 2);
  CHECK_FALSE(HasArgContaining(argvs[1], "memory-backend-file"));  // a plain boot
  CHECK(TemplateDirs(node).empty());
  CHECK(node.Records().size() == 1);
  bool warned = false;
  ppn::host::v1::Heartbeat hb = m->MakeHeartbeat();
  for (const std::string& w : hb.warnings()) warned |= absl::StartsWith(w, "no template of image ppn-test-guest");
  CHECK(warned);
  // Not tried again on every create.
  REQUIRE(node.Spawn("vm-2").ok());
  CHECK(QemuArgvs(node).size() == 3);
}

}  // namespace
}  // namespace ppn::host
