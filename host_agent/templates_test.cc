#include "host_agent/templates.h"

#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/escaping.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "host_agent/testing/fake_qmp_server.h"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

using testing::FakeQmpServer;

TemplateParams Params(const ppn::testing::TempDir& dir) {
  REQUIRE(WriteFileAtomically(dir.File("base.qcow2"), "base").ok());
  REQUIRE(WriteFileAtomically(dir.File("vmlinuz"), "kernel").ok());
  TemplateParams p;
  p.image.name = "ppn-test-guest";
  p.image.base_image = dir.File("base.qcow2");
  p.image.kernel = dir.File("vmlinuz");
  p.qemu_version = "QEMU emulator version 7.2.22";
  p.devices = {"q35,accel=tcg,memory-backend=ram0", "virtio-blk-pci,drive=drive0,id=disk0"};
  return p;
}

// A build directory with the four files a template has.
std::string Build(TemplateStore* store, const std::string& key) {
  std::string build = *store->NewBuildDir(key);
  for (const char* f : {"memory", "state", "disk.qcow2", "seed.iso"}) {
    REQUIRE(WriteFileAtomically(build + "/" + f, std::string("contents of ") + f).ok());
  }
  return build;
}

TEST_CASE("a template key changes with everything that changes the saved state's meaning", "[host_agent][templates]") {
  ppn::testing::TempDir dir;
  FileDigests digests;
  TemplateParams p = Params(dir);
  std::string key = *TemplateKey(p, &digests);
  CHECK(key.size() == 32);
  CHECK(*TemplateKey(p, &digests) == key);
  auto changed = [&](const std::function<void(TemplateParams*)>& change) {
    TemplateParams q = p;
    change(&q);
    return *TemplateKey(q, &digests) != key;
  };
  CHECK(changed([](TemplateParams* q) { q->vcpus = 2; }));
  CHECK(changed([](TemplateParams* q) { q->memory_mib = 256; }));
  CHECK(changed([](TemplateParams* q) { q->kvm = true; }));
  CHECK(changed([](TemplateParams* q) { q->disk_gib = 4; }));
  CHECK(changed([](TemplateParams* q) { q->qemu_version = "QEMU emulator version 8.0.0"; }));
  CHECK(changed([](TemplateParams* q) { q->devices.push_back("vmgenid,guid=auto"); }));
  CHECK(changed([](TemplateParams* q) { q->image.append = "console=ttyS0"; }));
  // A new kernel at the same path is a new template.
  absl::SleepFor(absl::Milliseconds(10));
  REQUIRE(WriteFileAtomically(dir.File("vmlinuz"), "another kernel").ok());
  CHECK(*TemplateKey(p, &digests) != key);
  // A missing image file is an error, not a key.
  std::filesystem::remove(dir.File("base.qcow2"));
  CHECK(TemplateKey(p, &digests).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a template is installed whole or not at all and found again by a new store", "[host_agent][templates]") {
  ppn::testing::TempDir dir;
  std::string key(32, 'a');
  {
    TemplateStore store(dir.File("templates"));
    CHECK(store.Find(key).status().code() == absl::StatusCode::kNotFound);
    absl::StatusOr<Template> t = store.Install(Build(&store, key), key, "ppn-test-guest");
    INFO(t.status().message());
    REQUIRE(t.ok());
    CHECK(t->dir == dir.File("templates/") + key);
    CHECK(ReadFile(t->memory_path()).value_or("") == "contents of memory");
    CHECK(std::filesystem::exists(t->dir + "/manifest.json"));
    CHECK(store.Keys() == std::vector<std::string>{key});
  }
  TemplateStore restarted(dir.File("templates"));  // an agent restart keeps its templates
  absl::StatusOr<Template> again = restarted.Find(key);
  REQUIRE(again.ok());
  CHECK(again->image == "ppn-test-guest");

  SECTION("a build directory left by a crash is swept, never taken for a template") {
    std::string left = Build(&restarted, std::string(32, 'b'));
    restarted.SweepBuilds();
    CHECK_FALSE(std::filesystem::exists(left));
    CHECK(restarted.Keys() == std::vector<std::string>{key});
  }
  SECTION("a build missing a file is not installed") {
    std::string bad(32, 'c');
    std::string build = Build(&restarted, bad);
    std::filesystem::remove(build + "/state");
    CHECK(restarted.Install(build, bad, "ppn-test-guest").status().code() == absl::StatusCode::kInternal);
    CHECK_FALSE(std::filesystem::exists(build));
    CHECK(restarted.Find(bad).status().code() == absl::StatusCode::kNotFound);
  }
}

TEST_CASE("a damaged template is refused and removed so that it is made again", "[host_agent][templates]") {
  ppn::testing::TempDir dir;
  TemplateStore store(dir.File("templates"));
  std::string key(32, 'd');
  absl::StatusOr<Template> t = store.Install(Build(&store, key), key, "ppn-test-guest");
  REQUIRE(t.ok());
  std::string file;
  SECTION("a deleted state file") { file = t->state_path(); }
  SECTION("a deleted memory file") { file = t->memory_path(); }
  SECTION("a corrupted memory file") {
    absl::SleepFor(absl::Milliseconds(10));
    REQUIRE(WriteFileAtomically(t->memory_path(), "contents of memorX").ok());
  }
  SECTION("a corrupted disk") {
    absl::SleepFor(absl::Milliseconds(10));
    REQUIRE(WriteFileAtomically(t->disk_path(), "garbage").ok());
  }
  SECTION("a corrupted manifest") { REQUIRE(WriteFileAtomically(t->dir + "/manifest.json", "{").ok()); }
  if (!file.empty()) std::filesystem::remove(file);
  absl::StatusOr<Template> found = store.Find(key);
  CHECK(found.status().code() == absl::StatusCode::kDataLoss);
  CHECK(found.status().message().find("template " + key) != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(t->dir));
  CHECK(store.Find(key).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a clone's identity is a fresh seed, its hostname and its user data in one message",
          "[host_agent][templates]") {
  GuestIdentity a = *NewIdentity("web-one", "#cloud-config\n");
  GuestIdentity b = *NewIdentity("web-one", "");
  CHECK(a.seed_hex.size() == 64);
  CHECK(a.seed_hex != b.seed_hex);
  CHECK(EncodeIdentity(a) ==
        "hostname web-one\nseed " + a.seed_hex + "\nuser-data " + absl::Base64Escape("#cloud-config\n") + "\nend\n");
  CHECK(EncodeIdentity(b) == "hostname web-one\nseed " + b.seed_hex + "\nend\n");
  std::string g = NewVmGenerationId();
  CHECK(g.size() == 36);
  CHECK(g[14] == '4');
  CHECK(g != NewVmGenerationId());
}

TEST_CASE("the identity channel waits for the guest's line and says when it never comes", "[host_agent][templates]") {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  REQUIRE(WriteChannel(fds[1], "PPN-TICK 1\n").ok());
  CHECK(WaitForChannelLine(fds[0], "PPN-IDENTITY-READY", absl::Milliseconds(50)).code() ==
        absl::StatusCode::kDeadlineExceeded);
  REQUIRE(WriteChannel(fds[1], "PPN-TICK 2\nPPN-IDENTITY-READY 1\n").ok());
  CHECK(WaitForChannelLine(fds[0], "PPN-IDENTITY-READY", absl::Seconds(5)).ok());
  close(fds[1]);
  CHECK(WaitForChannelLine(fds[0], "PPN-IDENTITY-OK", absl::Seconds(5)).code() == absl::StatusCode::kUnavailable);
  close(fds[0]);
  CHECK(ConnectIdentityChannel("/tmp/no-such-ppn-identity.sock", absl::Milliseconds(20)).status().code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("a template is saved without its shared memory and loaded paused", "[host_agent][templates]") {
  char tmpl[] = "/tmp/ppntmpl-XXXXXX";  // a QMP socket path fits in 108 bytes
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string sock = std::string(tmpl) + "/qmp.sock";
  std::unique_ptr<FakeQmpServer> qmp_server = *FakeQmpServer::Start(sock);
  std::string run_state = "running";
  qmp_server->Handle("query-migrate", [](const nlohmann::json&) {
    return FakeQmpServer::Return({{"status", "completed"}});
  });
  qmp_server->Handle("query-status", [&](const nlohmann::json&) {
    return FakeQmpServer::Return({{"status", run_state}});
  });
  std::unique_ptr<QmpClient> qmp = *QmpClient::Connect(sock, absl::Seconds(5));
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  REQUIRE(SaveTemplateState(qmp.get(), fds[0], absl::Seconds(5)).ok());
  std::vector<std::string> commands = qmp_server->commands();
  CHECK(commands == std::vector<std::string>{"stop", "migrate-set-capabilities", "getfd", "migrate", "query-migrate"});
  CHECK(qmp_server->ArgumentsOf("migrate-set-capabilities")[0]["capabilities"][0]["capability"] == "x-ignore-shared");
  CHECK(qmp_server->ArgumentsOf("migrate")[0]["uri"] == "fd:ppn-template");

  run_state = "paused";
  REQUIRE(LoadTemplateState(qmp.get(), fds[1], absl::Seconds(5)).ok());
  std::vector<nlohmann::json> caps = qmp_server->ArgumentsOf("migrate-set-capabilities");
  REQUIRE(caps.size() == 3);
  CHECK(caps[2]["capabilities"][0]["state"] == false);  // a later live migration sends all its memory
  CHECK(qmp_server->ArgumentsOf("migrate-incoming")[0]["uri"] == "fd:ppn-template");

  SECTION("a load QEMU gives up is an error, not a guest") {
    run_state = "inmigrate";
    qmp_server->Handle("query-status", [](const nlohmann::json&) {
      return FakeQmpServer::Return({{"status", "postmigrate"}});
    });
    qmp_server->Handle("query-migrate", [](const nlohmann::json&) {
      return FakeQmpServer::Return({{"status", "failed"}, {"error-desc", "Unknown ramblock"}});
    });
    absl::Status s = LoadTemplateState(qmp.get(), fds[1], absl::Seconds(5));
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(s.message().find("Unknown ramblock") != std::string::npos);
  }
  close(fds[0]);
  close(fds[1]);
  qmp.reset();
  qmp_server.reset();
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace ppn::host
