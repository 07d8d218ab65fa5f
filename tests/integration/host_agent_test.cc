// The host agent binary running real QEMU guests (KVM where the probe passes, TCG otherwise).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>

#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <thread>

#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "host_agent/migration_channel.h"
#include "host_agent/qmp_client.h"
#include "host_agent/qmp_migration.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using namespace ppn::host::v1;  // NOLINT: test brevity
using ppn::testing::AgentProcess;
using ppn::testing::HttpGet;
using ppn::testing::ReadAll;
using ppn::testing::StartAgent;
using ppn::testing::WaitForFileContaining;

std::chrono::system_clock::time_point Deadline(int seconds = 60) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

struct Fixture {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki{"ppn.test"};
  TlsFiles fleet_tls = pki.Issue("fleet", "fleet");

  std::unique_ptr<HostAgent::Stub> Stub(const AgentProcess& agent, const TlsFiles& tls) {
    return HostAgent::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(agent.port), MtlsChannelCredentials(tls)));
  }
  std::unique_ptr<HostAgent::Stub> Stub(const AgentProcess& agent) { return Stub(agent, fleet_tls); }
};

ppn::types::v1::VmSpec Spec(const std::string& name, uint32_t memory_mib = 128) {
  ppn::types::v1::VmSpec spec;
  spec.set_display_name(name);
  spec.set_vcpus(1);
  spec.set_memory_mib(memory_mib);
  spec.set_image("ppn-test-guest");
  spec.add_port_forwards()->set_guest_port(80);
  spec.set_user_data("#cloud-config\n# secret-ish user data\n");
  return spec;
}

grpc::Status Spawn(HostAgent::Stub* stub, const std::string& vm_id, const ppn::types::v1::VmSpec& spec, VmInstance* out,
                   const std::string& tenant = "acme") {
  SpawnVmRequest req;
  req.set_vm_id(vm_id);
  req.set_tenant_id(tenant);
  *req.mutable_spec() = spec;
  SpawnVmResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  grpc::Status s = stub->SpawnVm(&ctx, req, &resp);
  if (out != nullptr) *out = resp.vm();
  return s;
}

grpc::Status Destroy(HostAgent::Stub* stub, const std::string& vm_id, VmInstance* out = nullptr) {
  DestroyVmRequest req;
  req.set_vm_id(vm_id);
  req.mutable_grace_period()->set_seconds(5);
  DestroyVmResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  grpc::Status s = stub->DestroyVm(&ctx, req, &resp);
  if (out != nullptr) *out = resp.vm();
  return s;
}

Heartbeat FirstHeartbeat(HostAgent::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(20));
  auto reader = stub->WatchHeartbeats(&ctx, WatchHeartbeatsRequest());
  Heartbeat hb;
  REQUIRE(reader->Read(&hb));
  ctx.TryCancel();
  while (reader->Read(&hb)) {
  }
  reader->Finish();
  return hb;
}

// Follows the agent's heartbeats (sent at every change) until `vm_id` is in `state`; the
// instance then, or nullopt after `seconds`.
std::optional<VmInstance> WaitForState(HostAgent::Stub* stub, const std::string& vm_id, ppn::types::v1::VmState state,
                                       int seconds = 120) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(seconds));
  WatchHeartbeatsRequest req;
  req.mutable_interval()->set_seconds(1);
  auto reader = stub->WatchHeartbeats(&ctx, req);
  Heartbeat hb;
  std::optional<VmInstance> found;
  while (!found.has_value() && reader->Read(&hb)) {
    for (const VmInstance& vm : hb.vms()) {
      if (vm.vm_id() == vm_id && vm.state() == state) found = vm;
    }
  }
  ctx.TryCancel();
  while (reader->Read(&hb)) {
  }
  reader->Finish();
  return found;
}

absl::Time TimeOf(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

TEST_CASE("a spawned VM boots with its seed, answers through its forwarded port and leaves nothing when destroyed",
          "[host_agent][qemu]") {
  Fixture f;
  AgentProcess agent = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", {"--kvm=auto"});
  auto stub = f.Stub(agent);
  VmInstance vm;
  grpc::Status s = Spawn(stub.get(), "vm-web-1", Spec("web-one"), &vm);
  INFO(s.error_message() << "\n" << ReadAll(agent.state_dir + "/agent.log"));
  REQUIRE(s.ok());
  // A cold boot is STARTING until its guest is ready; a restore from a template RUNNING at once.
  CHECK((vm.state() == ppn::types::v1::VM_STATE_STARTING || vm.state() == ppn::types::v1::VM_STATE_RUNNING));
  CHECK(vm.tenant_id() == "acme");
  CHECK(vm.spec().user_data().empty());  // never echoed
  REQUIRE(vm.forwarded_ports_size() == 1);
  int port = static_cast<int>(vm.forwarded_ports(0).host_port());
  CHECK(vm.forwarded_ports(0).host_address() == "127.0.0.1");

  Heartbeat hb = FirstHeartbeat(stub.get());
  CHECK(hb.node_id() == "laptop-a");
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).tenant_id() == "acme");
  CHECK(hb.capabilities().balloon());
  // KVM only where the probe passed; the VM's accelerator says which.
  if (hb.kvm() == ppn::types::v1::KVM_SUPPORT_AVAILABLE) {
    CHECK(vm.accelerator() == ppn::types::v1::ACCELERATOR_KVM);
  } else {
    CHECK(hb.kvm() == ppn::types::v1::KVM_SUPPORT_NONE);
    CHECK(vm.accelerator() == ppn::types::v1::ACCELERATOR_TCG);
  }

  REQUIRE(WaitForFileContaining(vm.console_log_path(), "PPN-GUEST-READY", absl::Seconds(60)));
  CHECK(ReadAll(vm.console_log_path()).find("PPN-HOSTNAME=web-one") != std::string::npos);
  CHECK(HttpGet(port, "/", absl::Seconds(30)) == "hello from web-one\n");
  CHECK(std::filesystem::exists(agent.state_dir + "/vms/vm-web-1/disk.qcow2"));

  SECTION("the balloon shrinks the guest") {
    SetBalloonRequest req;
    req.set_vm_id("vm-web-1");
    req.set_target_mib(96);
    SetBalloonResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(stub->SetBalloon(&ctx, req, &resp).ok());
    CHECK(resp.actual_mib() <= 128);
    GetBalloonResponse got;
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    do {
      grpc::ClientContext c2;
      c2.set_deadline(Deadline());
      GetBalloonRequest g;
      g.set_vm_id("vm-web-1");
      REQUIRE(stub->GetBalloon(&c2, g, &got).ok());
      if (got.actual_mib() == 96) break;
      absl::SleepFor(absl::Milliseconds(200));
    } while (absl::Now() < deadline);
    CHECK(got.actual_mib() == 96);
    CHECK(got.memory_mib() == 128);
  }

  VmInstance stopped;
  REQUIRE(Destroy(stub.get(), "vm-web-1", &stopped).ok());
  CHECK(stopped.state() == ppn::types::v1::VM_STATE_DESTROYED);
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-web-1") == 0);
  CHECK_FALSE(std::filesystem::exists(agent.state_dir + "/vms/vm-web-1"));
  CHECK(HttpGet(port, "/", absl::Seconds(1)).empty());
  CHECK(FirstHeartbeat(stub.get()).vms_size() == 0);
  CHECK(Destroy(stub.get(), "vm-web-1").error_code() == grpc::StatusCode::NOT_FOUND);
}

TEST_CASE("two VMs run at once and a third that does not fit is refused", "[host_agent][qemu]") {
  Fixture f;
  AgentProcess agent = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-b",
                                  {"--kvm=off", "--advertised_memory_mib=1024", "--safety_margin_mib=512"});
  auto stub = f.Stub(agent);
  VmInstance a, b;
  REQUIRE(Spawn(stub.get(), "vm-a", Spec("alpha", 192), &a).ok());
  REQUIRE(Spawn(stub.get(), "vm-b", Spec("beta", 192), &b).ok());
  CHECK(a.forwarded_ports(0).host_port() != b.forwarded_ports(0).host_port());
  grpc::Status third = Spawn(stub.get(), "vm-c", Spec("gamma", 192), nullptr);
  CHECK(third.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(third.error_message() ==
        "node laptop-b has 128 MiB available for VMs (1024 MiB total, 512 MiB safety margin, 384 MiB in use); "
        "the VM needs 192 MiB");
  CHECK(Spawn(stub.get(), "vm-a", Spec("again", 64), nullptr).error_code() == grpc::StatusCode::ALREADY_EXISTS);
  CHECK(HttpGet(static_cast<int>(a.forwarded_ports(0).host_port()), "/", absl::Seconds(60)) == "hello from alpha\n");
  CHECK(HttpGet(static_cast<int>(b.forwarded_ports(0).host_port()), "/", absl::Seconds(60)) == "hello from beta\n");
  Heartbeat hb = FirstHeartbeat(stub.get());
  CHECK(hb.available_memory_mib() == 128);
  CHECK(hb.vms_size() == 2);
  REQUIRE(hb.images_size() == 1);
  CHECK(hb.images(0) == "ppn-test-guest");
  CHECK(hb.disk_total_mib() > 0);
  CHECK(hb.disk_available_mib() > 0);
  CHECK(hb.disk_available_mib() < hb.disk_total_mib());
  // A disk the node cannot hold is refused before anything is made.
  ppn::types::v1::VmSpec huge = Spec("huge", 64);
  huge.set_disk_gib(4096);
  grpc::Status disk = Spawn(stub.get(), "vm-huge", huge, nullptr);
  CHECK(disk.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(disk.error_message().find("node laptop-b has ") == 0);
  CHECK(disk.error_message().find(" MiB of disk available for VMs; the VM's disk needs 4194304 MiB") !=
        std::string::npos);
  CHECK_FALSE(std::filesystem::exists(agent.state_dir + "/vms/vm-huge"));
  REQUIRE(Destroy(stub.get(), "vm-a").ok());
  REQUIRE(Destroy(stub.get(), "vm-b").ok());
}

TEST_CASE("a spawn that fails leaves nothing behind and says why", "[host_agent][qemu]") {
  Fixture f;
  // A catalog entry whose kernel is not a kernel: QEMU itself refuses to start.
  std::ofstream(f.guest.path() + "/junk-kernel") << "this is not a kernel";
  std::ofstream(f.guest.path() + "/bad-catalog.json")
      << "{\"images\": {\"broken\": {\"base_image\": \"" << f.guest.path() << "/base.qcow2\", \"kernel\": \""
      << f.guest.path() << "/junk-kernel\"}}}";
  AgentProcess agent = StartAgent(f.pki, f.guest.path(), f.guest.path() + "/bad-catalog.json", "cloud", {"--kvm=off"});
  auto stub = f.Stub(agent);
  ppn::types::v1::VmSpec spec = Spec("x");

  spec.set_image("no-such-image");
  grpc::Status unknown = Spawn(stub.get(), "vm-x", spec, nullptr);
  CHECK(unknown.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(unknown.error_message() == "image \"no-such-image\" is not in this node's catalog (have: broken)");

  spec.set_image("broken");
  grpc::Status broken = Spawn(stub.get(), "vm-x", spec, nullptr);
  CHECK(broken.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(broken.error_message().find("QEMU did not start VM vm-x") == 0);
  CHECK(broken.error_message().find("kernel") != std::string::npos);

  spec.set_memory_mib(10);
  CHECK(Spawn(stub.get(), "vm-x", spec, nullptr).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(Spawn(stub.get(), "VM X!", Spec("x"), nullptr).error_code() == grpc::StatusCode::INVALID_ARGUMENT);

  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-x") == 0);
  // The first create of an image also starts making its template in the background; for this
  // image that fails too, and must take its files with it.
  absl::Time until = absl::Now() + absl::Seconds(30);
  while (!std::filesystem::is_empty(agent.state_dir + "/vms") && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::string left;
  for (const auto& e : std::filesystem::recursive_directory_iterator(agent.state_dir + "/vms")) {
    left += e.path().string() + "\n";
  }
  INFO("left in vms/: " << left);
  CHECK(std::filesystem::is_empty(agent.state_dir + "/vms"));
  CHECK(FirstHeartbeat(stub.get()).vms_size() == 0);
}

TEST_CASE("only the fleet and scheduler may call the host agent", "[host_agent][qemu][authz]") {
  Fixture f;
  AgentProcess agent = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "cloud", {"--kvm=off"});
  auto proxy = f.Stub(agent, f.pki.Issue("tenant-proxy", "proxy"));
  grpc::Status s = Spawn(proxy.get(), "vm-1", Spec("x"), nullptr);
  CHECK(s.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(s.error_message() == "role tenant-proxy may not call /ppn.host.v1.HostAgent/SpawnVm");
  auto scheduler = f.Stub(agent, f.pki.Issue("scheduler", "scheduler"));
  ListVmsResponse list;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  CHECK(scheduler->ListVms(&ctx, ListVmsRequest(), &list).ok());
}

TEST_CASE("an agent killed with SIGKILL re-adopts its running VMs on restart", "[host_agent][qemu]") {
  Fixture f;
  std::vector<std::string> flags = {"--kvm=off"};
  AgentProcess agent = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", flags);
  VmInstance vm;
  {
    auto stub = f.Stub(agent);
    REQUIRE(Spawn(stub.get(), "vm-keep", Spec("keeper"), &vm, "globex").ok());
  }
  int port = static_cast<int>(vm.forwarded_ports(0).host_port());
  REQUIRE(HttpGet(port, "/", absl::Seconds(60)) == "hello from keeper\n");
  {
    auto stub = f.Stub(agent);
    REQUIRE(WaitForState(stub.get(), "vm-keep", ppn::types::v1::VM_STATE_RUNNING).has_value());
  }
  agent.process->Signal(SIGKILL);
  agent.process->Wait(absl::Seconds(10));
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-keep") == 1);  // the guest lives on

  AgentProcess again = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", flags);
  auto stub = f.Stub(again);
  Heartbeat hb = FirstHeartbeat(stub.get());
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).vm_id() == "vm-keep");
  CHECK(hb.vms(0).tenant_id() == "globex");
  CHECK(hb.vms(0).state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(hb.vms(0).pid() == vm.pid());
  CHECK(HttpGet(port, "/", absl::Seconds(10)) == "hello from keeper\n");
  // Its port is still held: a new VM gets another one.
  VmInstance other;
  REQUIRE(Spawn(stub.get(), "vm-new", Spec("newer", 64), &other).ok());
  CHECK(other.forwarded_ports(0).host_port() != vm.forwarded_ports(0).host_port());
  REQUIRE(Destroy(stub.get(), "vm-new").ok());
  REQUIRE(Destroy(stub.get(), "vm-keep").ok());
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-keep") == 0);

  SECTION("a VM that died while the agent was down is reported FAILED, not forgotten") {
    VmInstance doomed;
    REQUIRE(Spawn(stub.get(), "vm-doomed", Spec("doomed", 64), &doomed).ok());
    again.process->Signal(SIGKILL);
    again.process->Wait(absl::Seconds(10));
    ppn::testing::KillProcessesMentioning("ppn-vm-doomed");
    AgentProcess third = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", flags);
    auto stub3 = f.Stub(third);
    Heartbeat after = FirstHeartbeat(stub3.get());
    REQUIRE(after.vms_size() == 1);
    CHECK(after.vms(0).state() == ppn::types::v1::VM_STATE_FAILED);
    CHECK(after.vms(0).tenant_id() == "acme");
    REQUIRE(Destroy(stub3.get(), "vm-doomed").ok());
  }
}

TEST_CASE("a running guest live-migrates between two agents with its disk", "[host_agent][qemu][migration]") {
  Fixture f;
  std::vector<std::string> flags = {"--kvm=off"};
  AgentProcess a = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", flags);
  AgentProcess b =
      StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-b", {"--kvm=off", "--port_range=21000-21999"});
  auto sa = f.Stub(a);
  auto sb = f.Stub(b);
  VmInstance vm;
  REQUIRE(Spawn(sa.get(), "vm-mover", Spec("mover"), &vm).ok());
  int port_a = static_cast<int>(vm.forwarded_ports(0).host_port());
  REQUIRE(HttpGet(port_a, "/cgi-bin/write?before-move", absl::Seconds(60)) == "wrote before-move\n");
  REQUIRE(HttpGet(port_a, "/cgi-bin/read", absl::Seconds(10)) == "before-move\n");
  REQUIRE(WaitForFileContaining(vm.console_log_path(), "PPN-TICK 2", absl::Seconds(30)));

  PrepareIncomingRequest prep;
  prep.set_vm_id("vm-mover");
  prep.set_tenant_id("acme");
  *prep.mutable_spec() = vm.spec();
  prep.set_accelerator(vm.accelerator());
  prep.set_source_node_id("laptop-a");
  PrepareIncomingResponse prepared;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = sb->PrepareIncoming(&ctx, prep, &prepared);
    INFO(s.error_message());
    REQUIRE(s.ok());
  }
  // Everything on the migration port is captured: the stream must be TLS, no guest byte in clear.
  std::string migration_port = prepared.migration_uri().substr(prepared.migration_uri().rfind(':') + 1);
  std::string pcap = b.state_dir + "/migration.pcap";
  ppn::testing::Subprocess capture(
      {"/usr/bin/tcpdump", "-i", "lo", "-U", "-s", "0", "-w", pcap, "tcp", "port", migration_port},
      b.state_dir + "/tcpdump.log");
  REQUIRE(WaitForFileContaining(b.state_dir + "/tcpdump.log", "listening on", absl::Seconds(10)));
  // A stranger reaches the incoming port first: it is shut out and the waiting VM not disturbed.
  {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(migration_port)));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    REQUIRE(connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    std::string junk(64, 'Z');
    (void)!write(s, junk.data(), junk.size());
    timeval tv{10, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    ssize_t n = read(s, &c, 1);
    CHECK((n == 0 || (n < 0 && errno == ECONNRESET)));  // closed by the target agent, not left waiting
    close(s);
    Heartbeat waiting = FirstHeartbeat(sb.get());
    REQUIRE(waiting.vms_size() == 1);
    CHECK(waiting.vms(0).state() == ppn::types::v1::VM_STATE_MIGRATING);
  }
  MigrateOutRequest out;
  out.set_vm_id("vm-mover");
  out.set_migration_uri(prepared.migration_uri());
  out.set_migration_ticket(prepared.migration_ticket());
  out.set_target_node_id("laptop-b");
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(120));
  auto reader = sa->MigrateOut(&ctx, out);
  MigrateOutResponse msg;
  ppn::types::v1::MigrationProgress last;
  int reports = 0;
  while (reader->Read(&msg)) {
    last = msg.progress();
    ++reports;
  }
  REQUIRE(reader->Finish().ok());
  INFO(last.message());
  REQUIRE(last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(last.transferred_bytes() > 0);
  CHECK(last.has_downtime());
  capture.Signal(SIGTERM);
  capture.Wait(absl::Seconds(10));
  std::string captured = ReadAll(pcap);
  CHECK(captured.size() > 100 * 1024);                                    // the stream went through the port
  CHECK(captured.find("PPNMARK:before-move") == std::string::npos);       // the disk, not in clear
  CHECK(captured.find("hello from mover") == std::string::npos);          // the guest's memory, not in clear
  CHECK(captured.find(std::string("\x16\x03", 2)) != std::string::npos);  // a TLS handshake record

  // The source is gone; the target runs the same guest, its disk and its counter intact.
  CHECK(FirstHeartbeat(sa.get()).vms_size() == 0);
  int port_b = static_cast<int>(prepared.forwarded_ports(0).host_port());
  CHECK(HttpGet(port_b, "/cgi-bin/read", absl::Seconds(30)) == "before-move\n");
  std::string console_b = b.state_dir + "/vms/vm-mover/console.log";
  REQUIRE(WaitForFileContaining(console_b, "PPN-TICK", absl::Seconds(20)));
  std::smatch m;
  std::string text = ReadAll(console_b);
  REQUIRE(std::regex_search(text, m, std::regex("PPN-TICK ([0-9]+)")));
  CHECK(std::stoi(m[1]) > 2);  // counting on from where it was, not rebooted
  CHECK(text.find("PPN-GUEST-BOOTED") == std::string::npos);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  Heartbeat hb;
  do {
    hb = FirstHeartbeat(sb.get());
  } while (!(hb.vms_size() == 1 && hb.vms(0).state() == ppn::types::v1::VM_STATE_RUNNING) && absl::Now() < deadline);
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).state() == ppn::types::v1::VM_STATE_RUNNING);
  REQUIRE(Destroy(sb.get(), "vm-mover").ok());
}

grpc::Status Prepare(HostAgent::Stub* stub, const std::string& vm_id, const ppn::types::v1::VmSpec& spec,
                     int ready_timeout_seconds, PrepareIncomingResponse* out) {
  PrepareIncomingRequest req;
  req.set_vm_id(vm_id);
  req.set_tenant_id("acme");
  *req.mutable_spec() = spec;
  req.set_accelerator(ppn::types::v1::ACCELERATOR_TCG);
  req.mutable_ready_timeout()->set_seconds(ready_timeout_seconds);
  req.set_source_node_id("laptop-a");
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  return stub->PrepareIncoming(&ctx, req, out);
}

// Polls heartbeats until `done` holds or `timeout` passes; returns the last one.
Heartbeat WaitForHeartbeat(HostAgent::Stub* stub, const std::function<bool(const Heartbeat&)>& done,
                           absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  Heartbeat hb;
  do {
    hb = FirstHeartbeat(stub);
    if (done(hb)) break;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  return hb;
}

TEST_CASE("an agent killed while a spawn is in flight adopts its one QEMU and a retry gets it",
          "[host_agent][qemu][crash]") {
  Fixture f;
  // The agent waits 5 s between QEMU's exec and its answer: time to kill it in between.
  AgentProcess agent = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a",
                                  {"--kvm=off", "--test_hold_after_exec=5s", "--templates=off"});
  grpc::Status first;
  std::thread spawn([&] {
    auto stub = f.Stub(agent);
    first = Spawn(stub.get(), "vm-inflight", Spec("inflight"), nullptr);
  });
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (ppn::testing::CountProcessesMentioning("ppn-vm-inflight") == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  REQUIRE(ppn::testing::CountProcessesMentioning("ppn-vm-inflight") == 1);
  agent.process->Signal(SIGKILL);
  agent.process->Wait(absl::Seconds(10));
  spawn.join();
  CHECK_FALSE(first.ok());  // the caller never learnt the outcome
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-inflight") == 1);

  AgentProcess again =
      StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", {"--kvm=off", "--templates=off"});
  auto stub = f.Stub(again);
  Heartbeat hb = FirstHeartbeat(stub.get());
  INFO(ReadAll(again.state_dir + "/agent.log"));
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).vm_id() == "vm-inflight");
  CHECK(hb.vms(0).tenant_id() == "acme");
  CHECK(hb.vms(0).state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-inflight") == 1);
  // The fleet's retry of the same create gets the adopted VM, not a second QEMU.
  VmInstance vm;
  REQUIRE(Spawn(stub.get(), "vm-inflight", Spec("inflight"), &vm).ok());
  CHECK(vm.pid() == hb.vms(0).pid());
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-inflight") == 1);
  CHECK(HttpGet(static_cast<int>(vm.forwarded_ports(0).host_port()), "/", absl::Seconds(60)) ==
        "hello from inflight\n");
  CHECK(Spawn(stub.get(), "vm-inflight", Spec("inflight"), nullptr, "globex").error_code() ==
        grpc::StatusCode::ALREADY_EXISTS);
  REQUIRE(Destroy(stub.get(), "vm-inflight").ok());
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-inflight") == 0);
  CHECK_FALSE(std::filesystem::exists(again.state_dir + "/vms/vm-inflight"));
}

TEST_CASE("a prepared target that never receives a stream removes itself and a retry can prepare again",
          "[host_agent][qemu][migration]") {
  Fixture f;
  AgentProcess b =
      StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-b", {"--kvm=off", "--port_range=21000-21999"});
  auto sb = f.Stub(b);
  std::string qemu_of_b = b.state_dir + "/vms/vm-waiting/";
  PrepareIncomingResponse prepared;
  REQUIRE(Prepare(sb.get(), "vm-waiting", Spec("waiting"), 60, &prepared).ok());
  // Prepared again (the scheduler crashed and retries): the waiting target is replaced.
  PrepareIncomingResponse replaced;
  grpc::Status again = Prepare(sb.get(), "vm-waiting", Spec("waiting"), 2, &replaced);
  INFO(again.error_message());
  REQUIRE(again.ok());
  CHECK(ppn::testing::CountProcessesMentioning(qemu_of_b) == 1);
  Heartbeat hb = FirstHeartbeat(sb.get());
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).state() == ppn::types::v1::VM_STATE_MIGRATING);
  // Nothing arrives within its 2 s: it goes, wholly.
  hb = WaitForHeartbeat(
      sb.get(), [](const Heartbeat& h) { return h.vms_size() == 0; }, absl::Seconds(20));
  CHECK(hb.vms_size() == 0);
  CHECK(ppn::testing::CountProcessesMentioning(qemu_of_b) == 0);
  CHECK_FALSE(std::filesystem::exists(b.state_dir + "/vms/vm-waiting"));
  CHECK(Prepare(sb.get(), "vm-waiting", Spec("waiting"), 60, &prepared).ok());
  REQUIRE(Destroy(sb.get(), "vm-waiting").ok());
}

TEST_CASE("an outgoing migration whose target dies leaves the source guest running and the target gone",
          "[host_agent][qemu][migration]") {
  Fixture f;
  AgentProcess a = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", {"--kvm=off"});
  AgentProcess b =
      StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-b", {"--kvm=off", "--port_range=21000-21999"});
  auto sa = f.Stub(a);
  auto sb = f.Stub(b);
  VmInstance vm;
  REQUIRE(Spawn(sa.get(), "vm-stays", Spec("stays"), &vm).ok());
  int port = static_cast<int>(vm.forwarded_ports(0).host_port());
  REQUIRE(HttpGet(port, "/", absl::Seconds(60)) == "hello from stays\n");
  PrepareIncomingResponse prepared;
  REQUIRE(Prepare(sb.get(), "vm-stays", vm.spec(), 60, &prepared).ok());
  MigrateOutRequest out;
  out.set_vm_id("vm-stays");
  out.set_migration_uri(prepared.migration_uri());
  out.set_migration_ticket(prepared.migration_ticket());
  out.set_target_node_id("laptop-b");
  out.set_max_bandwidth_mib_per_second(1);  // slow enough to be caught mid-stream
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(120));
  auto reader = sa->MigrateOut(&ctx, out);
  MigrateOutResponse msg;
  ppn::types::v1::MigrationProgress last;
  bool killed = false;
  while (reader->Read(&msg)) {
    last = msg.progress();
    if (!killed && last.transferred_bytes() > 0) {
      killed = ppn::testing::KillProcessesMentioning(b.state_dir + "/vms/vm-stays/") == 1;
    }
  }
  REQUIRE(reader->Finish().ok());
  CHECK(killed);
  CHECK(last.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  Heartbeat ha = FirstHeartbeat(sa.get());
  REQUIRE(ha.vms_size() == 1);
  CHECK(ha.vms(0).state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(HttpGet(port, "/", absl::Seconds(30)) == "hello from stays\n");
  // The target's QEMU died with its incoming migration: it removed itself.
  Heartbeat hb = WaitForHeartbeat(
      sb.get(), [](const Heartbeat& h) { return h.vms_size() == 0; }, absl::Seconds(20));
  CHECK(hb.vms_size() == 0);
  CHECK_FALSE(std::filesystem::exists(b.state_dir + "/vms/vm-stays"));
  REQUIRE(Destroy(sa.get(), "vm-stays").ok());
}

TEST_CASE("a source left paused by a completed migration is re-adopted as migrated out and ResumeVm runs it again",
          "[host_agent][qemu][migration][crash]") {
  Fixture f;
  AgentProcess a = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", {"--kvm=off"});
  AgentProcess b =
      StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-b", {"--kvm=off", "--port_range=21000-21999"});
  auto sb = f.Stub(b);
  VmInstance vm;
  {
    auto sa = f.Stub(a);
    REQUIRE(Spawn(sa.get(), "vm-paused", Spec("paused"), &vm).ok());
  }
  int port = static_cast<int>(vm.forwarded_ports(0).host_port());
  REQUIRE(HttpGet(port, "/cgi-bin/write?kept", absl::Seconds(60)) == "wrote kept\n");
  PrepareIncomingResponse prepared;
  REQUIRE(Prepare(sb.get(), "vm-paused", vm.spec(), 60, &prepared).ok());
  // The source agent dies late in a migration: QEMU completes it alone and stays paused.
  a.process->Signal(SIGKILL);
  a.process->Wait(absl::Seconds(10));
  {
    absl::StatusOr<std::unique_ptr<ppn::host::QmpClient>> qmp =
        ppn::host::QmpClient::Connect(a.state_dir + "/vms/vm-paused/qmp.sock", absl::Seconds(10));
    REQUIRE(qmp.ok());
    // As the agent would: its own connection with the target's ticket, TLS by QEMU.
    absl::StatusOr<int> connection =
        ppn::host::ConnectMigration(prepared.migration_uri(), prepared.migration_ticket(), absl::Seconds(10));
    REQUIRE(connection.ok());
    ppn::host::OutgoingMigration m;
    m.fd = *connection;
    m.tls_creds = "tls-client";
    m.tls_hostname = "laptop-b";
    ppn::types::v1::MigrationProgress done = ppn::host::MigrateOverQmp(
        qmp->get(), m, ppn::types::v1::MigrationProgress(), ppn::RealClock::Get(), [](const auto&) { return true; });
    INFO(done.message());
    REQUIRE(done.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  }
  AgentProcess restarted = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", {"--kvm=off"});
  auto sa = f.Stub(restarted);
  Heartbeat ha = FirstHeartbeat(sa.get());
  REQUIRE(ha.vms_size() == 1);
  CHECK(ha.vms(0).state() == ppn::types::v1::VM_STATE_MIGRATING);
  CHECK(ha.vms(0).migrated_out());
  CHECK(ha.vms(0).state_message() == "paused after migrating out");
  // The target never takes over (the scheduler removed it): the source copy runs again.
  REQUIRE(Destroy(sb.get(), "vm-paused").ok());
  ResumeVmRequest resume;
  resume.set_vm_id("vm-paused");
  ResumeVmResponse resumed;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = sa->ResumeVm(&ctx, resume, &resumed);
    INFO(s.error_message());
    REQUIRE(s.ok());
  }
  CHECK(resumed.vm().state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK_FALSE(resumed.vm().migrated_out());
  CHECK(HttpGet(port, "/cgi-bin/read", absl::Seconds(30)) == "kept\n");
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    CHECK(sa->ResumeVm(&ctx, resume, &resumed).error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  }
  REQUIRE(Destroy(sa.get(), "vm-paused").ok());
}

TEST_CASE("an agent whose QEMU user cannot reach the state directory refuses to start in one line",
          "[host_agent][qemu]") {
  if (geteuid() != 0) {
    WARN("not root: QEMU runs as the agent's own user, nothing to check");
    return;
  }
  Fixture f;
  std::string locked = f.guest.path() + "/locked";
  std::filesystem::create_directories(locked + "/laptop-a");
  chmod(locked.c_str(), 0700);
  TlsFiles tls = f.pki.Issue("host", "laptop-a");
  std::string log = f.guest.path() + "/refused.log";
  ppn::testing::Subprocess agent(
      {ppn::testing::RunfilePath("host_agent/host_agent"), "--mesh=" + f.pki.mesh(), "--listen=127.0.0.1:0",
       "--tls_ca=" + tls.ca_cert, "--tls_cert=" + tls.cert, "--tls_key=" + tls.key, "--node_id=laptop-a",
       "--state_dir=" + locked + "/laptop-a", "--catalog=" + f.guest.catalog(), "--kvm=off"},
      log);
  int status = agent.Wait(absl::Seconds(60));
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  std::string text = ReadAll(log);
  INFO(text);
  CHECK(text.find("QEMU runs as nobody, which cannot enter " + locked + " (mode 0700)") != std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
}

TEST_CASE("two clones of one template have their own hostname, randomness and port, and outlive an agent restart",
          "[host_agent][qemu][templates]") {
  Fixture f;
  // Made at start, in the background; creates before it is there boot.
  std::vector<std::string> flags = {"--kvm=auto", "--templates=ppn-test-guest"};
  AgentProcess agent = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", flags);
  auto stub = f.Stub(agent);
  auto templates_made = [&] {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(agent.state_dir + "/templates", ec)) {
      if (e.path().filename().string()[0] != '.') out.push_back(e.path().string());
    }
    return out;
  };
  absl::Time deadline = absl::Now() + absl::Seconds(180);
  while (templates_made().empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  INFO(ReadAll(agent.state_dir + "/agent.log"));
  REQUIRE(templates_made().size() == 1);
  VmInstance a, b;
  grpc::Status s = Spawn(stub.get(), "vm-clone-a", Spec("clone-a"), &a);
  INFO(s.error_message() << "\n" << ReadAll(agent.state_dir + "/agent.log"));
  REQUIRE(s.ok());
  CHECK(a.state_message().rfind("restored from template ", 0) == 0);
  REQUIRE(Spawn(stub.get(), "vm-clone-b", Spec("clone-b"), &b).ok());
  CHECK(b.state_message().rfind("restored from template ", 0) == 0);
  int port_a = static_cast<int>(a.forwarded_ports(0).host_port());
  int port_b = static_cast<int>(b.forwarded_ports(0).host_port());
  CHECK(port_a != port_b);
  CHECK(HttpGet(port_a, "/", absl::Seconds(30)) == "hello from clone-a\n");
  CHECK(HttpGet(port_b, "/", absl::Seconds(30)) == "hello from clone-b\n");
  std::string id_a = HttpGet(port_a, "/cgi-bin/identity", absl::Seconds(30));
  std::string id_b = HttpGet(port_b, "/cgi-bin/identity", absl::Seconds(30));
  INFO("clone a: " << id_a << "clone b: " << id_b);
  REQUIRE(id_a.rfind("clone-a ", 0) == 0);
  REQUIRE(id_b.rfind("clone-b ", 0) == 0);
  CHECK(id_a.size() == std::string("clone-a ").size() + 64 + 1);
  CHECK(id_a.substr(8) != id_b.substr(8));  // 32 bytes of /dev/urandom each
  CHECK(ReadAll(a.console_log_path()).find("PPN-HOSTNAME=clone-a") != std::string::npos);
  CHECK(ReadAll(a.console_log_path()).find("PPN-GUEST-BOOTED") == std::string::npos);  // restored, not booted
  std::vector<std::string> templates = templates_made();
  REQUIRE(templates.size() == 1);

  // Destroy takes the clone's files, never the template.
  REQUIRE(Destroy(stub.get(), "vm-clone-a").ok());
  CHECK_FALSE(std::filesystem::exists(agent.state_dir + "/vms/vm-clone-a"));
  CHECK(std::filesystem::exists(templates[0] + "/memory"));
  CHECK(HttpGet(port_b, "/", absl::Seconds(10)) == "hello from clone-b\n");

  // A restart keeps the template and adopts the restored VM.
  agent.process->Signal(SIGKILL);
  agent.process->Wait(absl::Seconds(10));
  AgentProcess again = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", flags);
  auto stub2 = f.Stub(again);
  Heartbeat hb = FirstHeartbeat(stub2.get());
  REQUIRE(hb.vms_size() == 1);
  CHECK(hb.vms(0).vm_id() == "vm-clone-b");
  CHECK(hb.vms(0).state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(hb.vms(0).pid() == b.pid());
  CHECK(HttpGet(port_b, "/", absl::Seconds(10)) == "hello from clone-b\n");
  VmInstance c;
  REQUIRE(Spawn(stub2.get(), "vm-clone-c", Spec("clone-c"), &c).ok());
  CHECK(c.state_message().rfind(
            "restored from template " + std::filesystem::path(templates[0]).filename().string().substr(0, 12), 0) == 0);
  CHECK(HttpGet(static_cast<int>(c.forwarded_ports(0).host_port()), "/", absl::Seconds(30)) == "hello from clone-c\n");

  SECTION("a corrupted template makes the create boot, never restore garbage") {
    std::ofstream(templates[0] + "/state", std::ios::trunc) << "garbage";
    VmInstance d;
    REQUIRE(Spawn(stub2.get(), "vm-clone-d", Spec("clone-d"), &d).ok());
    CHECK(d.state_message().rfind("cold boot: no template of image ppn-test-guest: template ", 0) == 0);
    CHECK(HttpGet(static_cast<int>(d.forwarded_ports(0).host_port()), "/", absl::Seconds(30)) ==
          "hello from clone-d\n");
    // Made again in the background, whole.
    absl::Time remade = absl::Now() + absl::Seconds(180);
    while (!std::filesystem::exists(templates[0] + "/manifest.json") && absl::Now() < remade) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    CHECK(std::filesystem::exists(templates[0] + "/manifest.json"));
    CHECK(ReadAll(templates[0] + "/state") != "garbage");
    REQUIRE(Destroy(stub2.get(), "vm-clone-d").ok());
  }
  REQUIRE(Destroy(stub2.get(), "vm-clone-c").ok());
  REQUIRE(Destroy(stub2.get(), "vm-clone-b").ok());
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-clone") == 0);
  CHECK(ppn::testing::CountProcessesMentioning("ppn-template-") == 0);
}

TEST_CASE("a VM restored from a template live-migrates to a node that boots its VMs",
          "[host_agent][qemu][templates][migration]") {
  Fixture f;
  AgentProcess a =
      StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", {"--kvm=off", "--templates=ppn-test-guest"});
  AgentProcess b = StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-b",
                              {"--kvm=off", "--port_range=21000-21999", "--templates=off"});
  auto sa = f.Stub(a);
  auto sb = f.Stub(b);
  absl::Time deadline = absl::Now() + absl::Seconds(180);
  auto made = [&] {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(a.state_dir + "/templates", ec)) {
      if (e.path().filename().string()[0] != '.') return true;
    }
    return false;
  };
  while (!made() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  REQUIRE(made());
  VmInstance vm;
  REQUIRE(Spawn(sa.get(), "vm-mover", Spec("mover"), &vm).ok());
  REQUIRE(vm.state_message().rfind("restored from template ", 0) == 0);
  int port_a = static_cast<int>(vm.forwarded_ports(0).host_port());
  REQUIRE(HttpGet(port_a, "/cgi-bin/write?before-move", absl::Seconds(60)) == "wrote before-move\n");
  REQUIRE(WaitForFileContaining(vm.console_log_path(), "PPN-TICK", absl::Seconds(30)));

  PrepareIncomingResponse prepared;
  {
    PrepareIncomingRequest prep;
    prep.set_vm_id("vm-mover");
    prep.set_tenant_id("acme");
    *prep.mutable_spec() = vm.spec();
    prep.set_accelerator(vm.accelerator());
    prep.set_source_node_id("laptop-a");
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = sb->PrepareIncoming(&ctx, prep, &prepared);
    INFO(s.error_message());
    REQUIRE(s.ok());
  }
  MigrateOutRequest out;
  out.set_vm_id("vm-mover");
  out.set_migration_uri(prepared.migration_uri());
  out.set_migration_ticket(prepared.migration_ticket());
  out.set_target_node_id("laptop-b");
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(120));
  auto reader = sa->MigrateOut(&ctx, out);
  MigrateOutResponse msg;
  ppn::types::v1::MigrationProgress last;
  while (reader->Read(&msg)) last = msg.progress();
  REQUIRE(reader->Finish().ok());
  INFO(last.message() << "\n" << ReadAll(b.state_dir + "/vms/vm-mover/qemu.log"));
  REQUIRE(last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  int port_b = static_cast<int>(prepared.forwarded_ports(0).host_port());
  CHECK(HttpGet(port_b, "/cgi-bin/read", absl::Seconds(30)) == "before-move\n");
  CHECK(HttpGet(port_b, "/", absl::Seconds(30)) == "hello from mover\n");  // its own identity moved with it
  REQUIRE(Destroy(sb.get(), "vm-mover").ok());
}

TEST_CASE(
    "a VM is STARTING until its guest says PPN-READY, keeps its disk across stop and start, reboots and shows its "
    "console",
    "[host_agent][qemu][power]") {
  Fixture f;
  AgentProcess agent =
      StartAgent(f.pki, f.guest.path(), f.guest.catalog(), "laptop-a", {"--kvm=off", "--templates=off"});
  auto stub = f.Stub(agent);
  ppn::types::v1::VmSpec spec = Spec("disky");
  VmInstance vm;
  grpc::Status s = Spawn(stub.get(), "vm-disky", spec, &vm);
  INFO(s.error_message() << "\n" << ReadAll(agent.state_dir + "/agent.log"));
  REQUIRE(s.ok());
  CHECK(vm.state() == ppn::types::v1::VM_STATE_STARTING);
  CHECK_FALSE(vm.has_ready_time());
  const int port = static_cast<int>(vm.forwarded_ports(0).host_port());

  // Readiness: RUNNING once the guest said so, not before its services print they run.
  std::atomic<bool> console_ready{false};
  absl::Time console_seen = absl::InfiniteFuture();
  std::thread watcher([&] {
    if (WaitForFileContaining(vm.console_log_path(), "PPN-GUEST-READY", absl::Seconds(120))) {
      console_seen = absl::Now();
      console_ready = true;
    }
  });
  std::optional<VmInstance> ready = WaitForState(stub.get(), "vm-disky", ppn::types::v1::VM_STATE_RUNNING);
  const absl::Time api_seen = absl::Now();
  watcher.join();
  REQUIRE(ready.has_value());
  REQUIRE(console_ready);
  CHECK(ready->has_ready_time());
  CHECK(TimeOf(ready->ready_time()) >= TimeOf(ready->start_time()));
  CHECK(ready->boot_duration().seconds() + ready->boot_duration().nanos() > 0);
  // The guest prints its ready marker, then writes PPN-READY: the API may not run ahead of it.
  CHECK(api_seen + absl::Milliseconds(500) >= console_seen);
  CHECK(api_seen - console_seen < absl::Seconds(5));
  REQUIRE(HttpGet(port, "/cgi-bin/write?kept-across-stop", absl::Seconds(30)) == "wrote kept-across-stop\n");

  // Console: bounded reads with offsets, then following it.
  GetConsoleOutputRequest creq;
  creq.set_vm_id("vm-disky");
  creq.set_max_bytes(16);
  GetConsoleOutputResponse cout_resp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(stub->GetConsoleOutput(&ctx, creq, &cout_resp).ok());
  }
  CHECK(cout_resp.data().size() == 16);
  CHECK(cout_resp.next_offset() == 16);
  {
    StreamConsoleRequest sreq;
    sreq.set_vm_id("vm-disky");
    sreq.set_offset(cout_resp.next_offset());
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(30));
    auto reader = stub->StreamConsole(&ctx, sreq);
    StreamConsoleResponse msg;
    std::string followed;
    // The guest ticks every second: the stream follows the log as it grows.
    while (followed.find("PPN-TICK") == std::string::npos && reader->Read(&msg)) followed += msg.data();
    CHECK(followed.find("PPN-TICK") != std::string::npos);
    ctx.TryCancel();
    while (reader->Read(&msg)) {
    }
    reader->Finish();
  }

  // Stop: ACPI power-off, the disk stays.
  StopVmRequest stop;
  stop.set_vm_id("vm-disky");
  stop.mutable_grace_period()->set_seconds(30);
  StopVmResponse stopped;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(90));
    grpc::Status st = stub->StopVm(&ctx, stop, &stopped);
    INFO(st.error_message());
    REQUIRE(st.ok());
  }
  CHECK(stopped.vm().state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(stopped.vm().state_message() == "powered off by its guest (ACPI)");
  CHECK(ppn::testing::CountProcessesMentioning("ppn-vm-disky") == 0);
  CHECK(std::filesystem::exists(agent.state_dir + "/vms/vm-disky/disk.qcow2"));
  CHECK(HttpGet(port, "/", absl::Seconds(1)).empty());

  // Start: the same disk boots again, with its marker.
  StartVmRequest start;
  start.set_vm_id("vm-disky");
  StartVmResponse started;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status st = stub->StartVm(&ctx, start, &started);
    INFO(st.error_message() << "\n" << ReadAll(agent.state_dir + "/agent.log"));
    REQUIRE(st.ok());
  }
  CHECK(started.vm().state() == ppn::types::v1::VM_STATE_STARTING);
  CHECK(started.vm().forwarded_ports(0).host_port() == vm.forwarded_ports(0).host_port());
  REQUIRE(WaitForState(stub.get(), "vm-disky", ppn::types::v1::VM_STATE_RUNNING).has_value());
  CHECK(HttpGet(port, "/cgi-bin/read", absl::Seconds(60)) == "kept-across-stop\n");

  // Reboot: ACPI power-off and boot (the test guest powers off on the button); disk kept.
  RebootVmRequest reboot;
  reboot.set_vm_id("vm-disky");
  reboot.mutable_grace_period()->set_seconds(30);
  RebootVmResponse rebooted;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(120));
    grpc::Status st = stub->RebootVm(&ctx, reboot, &rebooted);
    INFO(st.error_message());
    REQUIRE(st.ok());
  }
  CHECK(rebooted.how() == "the guest powered off (ACPI) and booted again");
  CHECK(rebooted.vm().state() == ppn::types::v1::VM_STATE_STARTING);
  REQUIRE(WaitForState(stub.get(), "vm-disky", ppn::types::v1::VM_STATE_RUNNING).has_value());
  CHECK(HttpGet(port, "/cgi-bin/read", absl::Seconds(60)) == "kept-across-stop\n");

  REQUIRE(Destroy(stub.get(), "vm-disky").ok());
  CHECK_FALSE(std::filesystem::exists(agent.state_dir + "/vms/vm-disky"));
}

}  // namespace
}  // namespace ppn
