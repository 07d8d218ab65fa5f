// The adapter over real sockets with a fake fleet: the status and trailers a tenant gets, and
// WatchVm served by reactors (relay, cap, cancellation).

#include "tenant_proxy/tenant_service.h"

#include "catch2/catch.hpp"
#include "common/clock.h"
#include "grpcpp/create_channel.h"
#include "tenant_proxy/tenant_proxy_server.h"
#include "tenant_proxy/testing/fake_fleet_client.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn::proxy {
namespace {

using namespace ppn::tenancy::v1;  // NOLINT: test brevity

const char kAcme[] = "acme-token-1234567890";
const char kSlow[] = "slow-token-1234567890";

ProxyConfig Config() {
  ProxyConfig config;
  auto* acme = config.add_tenants();
  acme->set_tenant_id("acme");
  acme->add_token_sha256(TokenHash(kAcme));
  acme->mutable_limits()->set_max_vms(10);
  acme->mutable_limits()->set_max_vcpus(10);
  acme->mutable_limits()->set_max_memory_mib(10000);
  auto* slow = config.add_tenants();
  slow->set_tenant_id("slow");
  slow->add_token_sha256(TokenHash(kSlow));
  *slow->mutable_limits() = acme->limits();
  slow->mutable_limits()->set_requests_per_second(0.5);
  slow->mutable_limits()->set_burst(1);
  return config;
}

struct Server {
  explicit Server(int max_watch_streams = 2) {
    audit = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), RealClock::Get(),
                              [](const ppn::ledger::v1::AppendRequest&) { return absl::OkStatus(); });
    ProxyOptions options;
    options.max_watch_streams_per_tenant = max_watch_streams;
    core = std::make_unique<ProxyCore>(config, ProxyCore::Deps{&fleet, &limiter, audit.get()}, options);
    service = std::make_unique<TenantServiceImpl>(&authenticator, core.get());
    server =
        *StartTenantServer("127.0.0.1:0", pki.Issue("tenant-proxy", "proxy-public"), &authenticator, service.get());
    stub = TenantService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port), TlsChannelCredentials(pki.ca_cert_path())));
  }
  ~Server() { server.server->Shutdown(); }

  Vm Create(const std::string& name) {
    CreateVmRequest req;
    req.mutable_spec()->set_display_name(name);
    req.mutable_spec()->set_vcpus(1);
    req.mutable_spec()->set_memory_mib(128);
    req.mutable_spec()->set_image("debian-12");
    CreateVmResponse resp;
    grpc::ClientContext ctx;
    Auth(&ctx, kAcme);
    grpc::Status s = stub->CreateVm(&ctx, req, &resp);
    REQUIRE(s.ok());
    return resp.vm();
  }
  static void Auth(grpc::ClientContext* ctx, const char* token) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    ctx->AddMetadata("authorization", std::string("Bearer ") + token);
  }
  // Waits up to 10 s for `done`.
  template <typename F>
  static bool Eventually(F done) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!done() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    return done();
  }

  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  ProxyConfig config = Config();
  TokenAuthenticator authenticator = *TokenAuthenticator::Create(config);
  testing::FakeFleetClient fleet;
  RateLimiter limiter{RealClock::Get()};
  std::unique_ptr<AuditTrail> audit;
  std::unique_ptr<ProxyCore> core;
  std::unique_ptr<TenantServiceImpl> service;
  StartedServer server;
  std::unique_ptr<TenantService::Stub> stub;
};

TEST_CASE("a rate-limited call carries retry-after-ms as a bare integer", "[proxy][service][rate]") {
  Server s;
  ListVmsResponse list;
  grpc::ClientContext first;
  Server::Auth(&first, kSlow);
  REQUIRE(s.stub->ListVms(&first, {}, &list).ok());
  CHECK(first.GetServerTrailingMetadata().count("retry-after-ms") == 0);
  grpc::ClientContext second;
  Server::Auth(&second, kSlow);
  grpc::Status refused = s.stub->ListVms(&second, {}, &list);
  CHECK(refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(refused.error_message().find("rate limit of 0.5 requests/s (burst 1) reached; retry in ") == 0);
  auto trailers = second.GetServerTrailingMetadata();
  REQUIRE(trailers.count("retry-after-ms") == 1);
  std::string value(trailers.find("retry-after-ms")->second.data(), trailers.find("retry-after-ms")->second.size());
  INFO(value);
  int ms = 0;
  REQUIRE(absl::SimpleAtoi(value, &ms));  // digits only: no " ms"
  CHECK(std::to_string(ms) == value);
  CHECK(ms > 1000);
  CHECK(ms <= 2000);

  SECTION("a rate-limited WatchVm carries it too") {
    WatchVmRequest req;
    req.set_name("vms/vm-1");
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kSlow);
    auto reader = s.stub->WatchVm(&ctx, req);
    WatchVmResponse msg;
    CHECK_FALSE(reader->Read(&msg));
    CHECK(reader->Finish().error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK(ctx.GetServerTrailingMetadata().count("retry-after-ms") == 1);
  }
}

TEST_CASE("a WatchVm stream relays each state until the VM is destroyed", "[proxy][service][watch]") {
  Server s;
  Vm vm = s.Create("web");
  WatchVmRequest req;
  req.set_name(vm.name());
  grpc::ClientContext ctx;
  Server::Auth(&ctx, kAcme);
  auto reader = s.stub->WatchVm(&ctx, req);
  WatchVmResponse msg;
  REQUIRE(reader->Read(&msg));
  CHECK(msg.vm().state() == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(msg.vm().vm_id() == vm.vm_id());
  CHECK(msg.SerializeAsString().find("secret-node-7") == std::string::npos);

  DestroyVmRequest destroy;
  destroy.set_name(vm.name());
  DestroyVmResponse destroyed;
  grpc::ClientContext dctx;
  Server::Auth(&dctx, kAcme);
  REQUIRE(s.stub->DestroyVm(&dctx, destroy, &destroyed).ok());
  REQUIRE(reader->Read(&msg));
  CHECK(msg.vm().state() == ppn::types::v1::VM_STATE_DESTROYED);
  CHECK_FALSE(reader->Read(&msg));
  CHECK(reader->Finish().ok());
  CHECK(Server::Eventually([&] { return s.core->WatchStreamsForTest("acme") == 0; }));
}

TEST_CASE("a WatchVm of a missing VM ends NOT_FOUND", "[proxy][service][watch]") {
  Server s;
  WatchVmRequest req;
  req.set_name("vms/vm-404");
  grpc::ClientContext ctx;
  Server::Auth(&ctx, kAcme);
  auto reader = s.stub->WatchVm(&ctx, req);
  WatchVmResponse msg;
  CHECK_FALSE(reader->Read(&msg));
  grpc::Status st = reader->Finish();
  CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(st.error_message() == "vm vm-404 not found");
  CHECK(Server::Eventually([&] { return s.core->WatchStreamsForTest("acme") == 0; }));
}

TEST_CASE("the tenant's cancellation ends the fleet stream and frees the slot", "[proxy][service][watch]") {
  Server s(/*max_watch_streams=*/2);
  Vm vm = s.Create("web");
  WatchVmRequest req;
  req.set_name(vm.name());
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<WatchVmResponse>>> readers;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    Server::Auth(contexts.back().get(), kAcme);
    readers.push_back(s.stub->WatchVm(contexts.back().get(), req));
    WatchVmResponse msg;
    REQUIRE(readers.back()->Read(&msg));
  }
  CHECK(s.fleet.open_watches() == 2);

  grpc::ClientContext third;
  Server::Auth(&third, kAcme);
  auto refused = s.stub->WatchVm(&third, req);
  WatchVmResponse msg;
  CHECK_FALSE(refused->Read(&msg));
  grpc::Status st = refused->Finish();
  CHECK(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(st.error_message() == "at most 2 WatchVm streams per tenant; close one first");

  contexts[0]->TryCancel();
  CHECK(readers[0]->Finish().error_code() == grpc::StatusCode::CANCELLED);
  CHECK(Server::Eventually([&] { return s.fleet.open_watches() == 1; }));
  CHECK(s.fleet.cancelled_watches() == 1);
  CHECK(Server::Eventually([&] { return s.core->WatchStreamsForTest("acme") == 1; }));

  grpc::ClientContext again;
  Server::Auth(&again, kAcme);
  auto reader = s.stub->WatchVm(&again, req);
  CHECK(reader->Read(&msg));  // the freed slot is usable
  again.TryCancel();
  reader->Finish();
  contexts[1]->TryCancel();
  readers[1]->Finish();
  CHECK(Server::Eventually([&] { return s.core->WatchStreamsForTest("acme") == 0; }));
  CHECK(Server::Eventually([&] { return s.fleet.open_watches() == 0; }));
}

TEST_CASE("a server shut down with streams open ends them all", "[proxy][service][watch]") {
  auto s = std::make_unique<Server>(/*max_watch_streams=*/5);
  Vm vm = s->Create("web");
  WatchVmRequest req;
  req.set_name(vm.name());
  grpc::ClientContext ctx;
  Server::Auth(&ctx, kAcme);
  auto reader = s->stub->WatchVm(&ctx, req);
  WatchVmResponse msg;
  REQUIRE(reader->Read(&msg));
  s->server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  CHECK_FALSE(reader->Read(&msg));
  reader->Finish();
  CHECK(Server::Eventually([&] { return s->fleet.open_watches() == 0; }));
  CHECK(s->core->WatchStreamsForTest("acme") == 0);
}

TEST_CASE("core refusals reach the tenant with their code and words", "[proxy][service]") {
  Server s;
  CreateVmRequest req;
  req.mutable_spec()->set_display_name("x");
  req.mutable_spec()->set_vcpus(65);
  req.mutable_spec()->set_memory_mib(128);
  req.mutable_spec()->set_image("debian-12");
  CreateVmResponse resp;
  grpc::ClientContext ctx;
  Server::Auth(&ctx, kAcme);
  grpc::Status st = s.stub->CreateVm(&ctx, req, &resp);
  CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(st.error_message().find("vcpus") != std::string::npos);
  GetVmRequest get;
  get.set_name("vms/vm-404");
  GetVmResponse got;
  grpc::ClientContext gctx;
  Server::Auth(&gctx, kAcme);
  st = s.stub->GetVm(&gctx, get, &got);
  CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(st.error_message() == "vm vm-404 not found");
  GetQuotaResponse quota;
  grpc::ClientContext qctx;
  Server::Auth(&qctx, kAcme);
  REQUIRE(s.stub->GetQuota(&qctx, {}, &quota).ok());
  CHECK(quota.tenant_id() == "acme");
}

TEST_CASE("UpdateVmNetwork is authenticated rate-limited and answers the policy in effect",
          "[proxy][service][egress]") {
  Server s;
  Vm vm = s.Create("web");
  UpdateVmNetworkRequest req;
  req.set_name(vm.name());
  req.mutable_egress()->set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  auto* rule = req.mutable_egress()->add_allow();
  rule->set_cidr("203.0.113.0/24");
  rule->set_port_first(443);
  UpdateVmNetworkResponse resp;
  {
    grpc::ClientContext ctx;  // no token
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    CHECK(s.stub->UpdateVmNetwork(&ctx, req, &resp).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  CHECK(s.fleet.network_updates().empty());
  {
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kAcme);
    grpc::Status st = s.stub->UpdateVmNetwork(&ctx, req, &resp);
    INFO(st.error_message());
    REQUIRE(st.ok());
  }
  CHECK(resp.vm().spec().egress().internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
  CHECK(resp.vm().spec().egress().allow_size() == 1);
  CHECK(resp.vm().has_network());  // the counters are always shown, zero until its node reports
  CHECK(s.fleet.network_updates().size() == 1);
  {
    grpc::ClientContext ctx;  // another tenant: the same words as a VM that does not exist
    Server::Auth(&ctx, kSlow);
    grpc::Status st = s.stub->UpdateVmNetwork(&ctx, req, &resp);
    CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND);
    CHECK(st.error_message() == "vm " + vm.vm_id() + " not found");
  }
  {
    grpc::ClientContext ctx;  // slow's burst of 1 is spent
    Server::Auth(&ctx, kSlow);
    grpc::Status st = s.stub->UpdateVmNetwork(&ctx, req, &resp);
    CHECK(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK(ctx.GetServerTrailingMetadata().count("retry-after-ms") == 1);
  }
}

Vm CreateSized(Server& s, const std::string& name, uint32_t vcpus) {
  CreateVmRequest req;
  req.mutable_spec()->set_display_name(name);
  req.mutable_spec()->set_vcpus(vcpus);
  req.mutable_spec()->set_memory_mib(128);
  req.mutable_spec()->set_image("debian-12");
  CreateVmResponse resp;
  grpc::ClientContext ctx;
  Server::Auth(&ctx, kAcme);
  REQUIRE(s.stub->CreateVm(&ctx, req, &resp).ok());
  return resp.vm();
}

TEST_CASE("a stopped VM frees its vCPUs for the quota and starts again only if they fit", "[proxy][service][power]") {
  Server s;
  Vm a = CreateSized(s, "a", 6);
  StopVmRequest stop;
  stop.set_name(a.name());
  StopVmResponse stopped;
  {
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kAcme);
    grpc::Status st = s.stub->StopVm(&ctx, stop, &stopped);
    INFO(st.error_message());
    REQUIRE(st.ok());
  }
  CHECK(stopped.vm().state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(stopped.vm().state_message() == "powered off; its disk is kept and StartVm boots it again");
  GetQuotaResponse quota;
  {
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kAcme);
    REQUIRE(s.stub->GetQuota(&ctx, {}, &quota).ok());
  }
  CHECK(quota.usage().vms() == 1);
  CHECK(quota.usage().vcpus() == 0);
  CHECK(quota.usage().memory_mib() == 0);

  Vm b = CreateSized(s, "b", 6);  // fits: the stopped VM holds no vCPUs
  StartVmRequest start;
  start.set_name(a.name());
  start.set_fresh_disk(true);  // forwarded; the quota check applies all the same
  StartVmResponse started;
  {
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kAcme);
    grpc::Status refused = s.stub->StartVm(&ctx, start, &started);
    CHECK(refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK(refused.error_message() == "vCPU quota of 10 would be exceeded (6 in use)");
  }
  {
    DestroyVmRequest destroy;
    destroy.set_name(b.name());
    DestroyVmResponse destroyed;
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kAcme);
    REQUIRE(s.stub->DestroyVm(&ctx, destroy, &destroyed).ok());
  }
  {
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kAcme);
    REQUIRE(s.stub->StartVm(&ctx, start, &started).ok());
  }
  CHECK(started.vm().state() == ppn::types::v1::VM_STATE_STARTING);
  CHECK(s.fleet.power_calls() == std::vector<std::string>{"stop " + a.vm_id(), "start " + a.vm_id()});
  CHECK(s.fleet.last_start_fresh_disk());

  RebootVmRequest reboot;
  reboot.set_name(a.name());
  reboot.mutable_grace_period()->set_seconds(601);
  RebootVmResponse rebooted;
  grpc::ClientContext ctx;
  Server::Auth(&ctx, kAcme);
  grpc::Status bad = s.stub->RebootVm(&ctx, reboot, &rebooted);
  CHECK(bad.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(bad.error_message() == "grace_period must be 0-600 s");
}

TEST_CASE("console output is the guest's bytes as they are; another tenant's VM is NOT_FOUND like none",
          "[proxy][service][console]") {
  Server s;
  Vm a = s.Create("a");
  s.fleet.SetConsole(a.vm_id(), std::string("PPN-GUEST-READY\n\x1b[2J\0end", 24));
  GetConsoleOutputRequest req;
  req.set_name(a.name());
  GetConsoleOutputResponse out;
  {
    grpc::ClientContext ctx;
    Server::Auth(&ctx, kAcme);
    REQUIRE(s.stub->GetConsoleOutput(&ctx, req, &out).ok());
  }
  CHECK(out.data() == std::string("PPN-GUEST-READY\n\x1b[2J\0end", 24));
  CHECK(out.next_offset() == 24);
  auto refused = [&](const std::string& name, const char* token) {
    GetConsoleOutputRequest r;
    r.set_name(name);
    grpc::ClientContext ctx;
    Server::Auth(&ctx, token);
    GetConsoleOutputResponse ignored;
    return s.stub->GetConsoleOutput(&ctx, r, &ignored);
  };
  grpc::Status foreign = refused(a.name(), kSlow);
  grpc::Status absent = refused("vms/vm-nope", kAcme);
  CHECK(foreign.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(absent.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(foreign.error_message() == "vm " + a.vm_id() + " not found");
  CHECK(absent.error_message() == "vm vm-nope not found");
  req.set_max_bytes((1 << 20) + 1);
  grpc::ClientContext ctx;
  Server::Auth(&ctx, kAcme);
  CHECK(s.stub->GetConsoleOutput(&ctx, req, &out).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace ppn::proxy
