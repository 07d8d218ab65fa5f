// The tenant proxy over real sockets, in front of a real fleet (with fake host agents, so no
// QEMU is needed) and a real ledger: tokens, isolation, quotas, rate limits, egress policies
// narrowed to the tenant's and changed live, the audit trail and its spool, and no token in
// any log. Some cases run the real proxy binary: killed in the
// middle of a create, and holding 300 WatchVm streams.

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/grpc_ledger_appender.h"
#include "common/random.h"
#include "fleet/fleet_server.h"
#include "fleet/testing/fake_agent_client.h"
#include "grpcpp/create_channel.h"
#include "ledger/ledger_server.h"
#include "ledger/merkle.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tenant_proxy/grpc_fleet_client.h"
#include "tenant_proxy/tenant_proxy_server.h"
#include "tenant_proxy/testing/fake_fleet_service.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn {
namespace {

using namespace ppn::tenancy::v1;  // NOLINT: test brevity

const char kAcmeToken[] = "acme-secret-token-4f9d2c";
const char kAcmeOldToken[] = "acme-revoked-token-77aa";
const char kGlobexToken[] = "globex-secret-token-b81e";
const char kSlowToken[] = "slow-tenant-token-0c0c";
const char kInitechToken[] = "initech-tenant-token-9e9e";
const char kUmbrellaToken[] = "umbrella-tenant-token-5d5d";

std::string ConfigText() {
  std::ostringstream c;
  c << "tenants { tenant_id: \"acme\" token_sha256: \"" << proxy::TokenHash(kAcmeToken) << "\" revoked_token_sha256: \""
    << proxy::TokenHash(kAcmeOldToken) << "\" limits { max_vms: 5 max_vcpus: 16 max_memory_mib: 8192 } }\n"
    << "tenants { tenant_id: \"globex\" token_sha256: \"" << proxy::TokenHash(kGlobexToken)
    << "\" limits { max_vms: 10 max_vcpus: 32 max_memory_mib: 16384 } }\n"
    << "tenants { tenant_id: \"slow\" token_sha256: \"" << proxy::TokenHash(kSlowToken)
    << "\" limits { max_vms: 10 max_vcpus: 32 max_memory_mib: 16384 requests_per_second: 1 burst: 2 } }\n"
    << "tenants { tenant_id: \"initech\" token_sha256: \"" << proxy::TokenHash(kInitechToken)
    << "\" limits { max_vms: 2 max_vcpus: 4 max_memory_mib: 4096 max_disk_gib: 20 } }\n"
    // Guests of umbrella reach only 203.0.113.0/24 on port 443, never .66, at most 5 Mbit/s.
    << "tenants { tenant_id: \"umbrella\" token_sha256: \"" << proxy::TokenHash(kUmbrellaToken)
    << "\" limits { max_vms: 2 max_vcpus: 4 max_memory_mib: 4096 } egress { internet: INTERNET_ACCESS_DENIED "
       "allow { cidr: \"203.0.113.0/24\" port_first: 443 } deny { cidr: \"203.0.113.66\" } rate_limit_kbit: 5000 } "
       "}\n";
  return c.str();
}

struct Stack {
  std::ostringstream log;
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  // Ledger.
  std::unique_ptr<ledger::LedgerStore> ledger_store = *ledger::LedgerStore::Open(dir.File("ledger.db"));
  ledger::MerkleLog log_core{ledger_store.get(), *ledger::NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'l')),
                             RealClock::Get(), ledger::MerkleLog::Options{"ppn.test/ledger"}};
  ledger::LedgerService ledger_service{&log_core};
  StartedServer ledger_server;
  int ledger_port = 0;
  // Fleet with fake agents.
  fleet::testing::FakeAgentClientFactory agents;
  std::unique_ptr<fleet::VmStore> fleet_store = *fleet::VmStore::Open(dir.File("fleet.db"));
  fleet::FleetCore fleet_core{{fleet_store.get(), &agents, RealClock::Get(), OpenSslRandom::Get()},
                              {absl::Seconds(10)}};
  fleet::FleetService fleet_service{&fleet_core};
  StartedServer fleet_server;
  // Proxy.
  TlsFiles proxy_tls = pki.Issue("tenant-proxy", "proxy");
  std::unique_ptr<ppn::fleet::v1::FleetService::Stub> fleet_stub;
  std::unique_ptr<proxy::GrpcFleetClient> fleet_client;
  std::unique_ptr<proxy::AuditTrail> audit;
  proxy::RateLimiter limiter{RealClock::Get()};
  std::unique_ptr<proxy::TokenAuthenticator> authenticator;
  std::unique_ptr<proxy::ProxyCore> core;
  std::unique_ptr<proxy::TenantServiceImpl> service;
  StartedServer proxy_server;

  Stack() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
    auto logger = std::make_shared<spdlog::logger>("test", sink);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);

    REQUIRE(log_core.Start().ok());
    StartLedger("127.0.0.1:0");
    fleet_server = *fleet::StartFleetServer("ppn.test", "127.0.0.1:0", pki.Issue("fleet", "fleet"), &fleet_service);
    ppn::host::v1::Heartbeat hb;
    hb.set_node_id("laptop-a");
    hb.set_available_memory_mib(64 * 1024);
    hb.set_disk_total_mib(1 << 20);
    hb.set_disk_available_mib(1 << 20);
    for (const char* image : {"debian-12", "ppn-test-guest"}) hb.add_images(image);
    fleet_core.AddNode("laptop-a", "unused:1");
    fleet_core.OnHeartbeat(hb);

    fleet_stub = ppn::fleet::v1::FleetService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(fleet_server.port), MtlsChannelCredentials(proxy_tls)));
    audit = *proxy::AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), RealClock::Get(),
                                     GrpcLedgerAppender("127.0.0.1:" + std::to_string(ledger_port), proxy_tls));
    std::ofstream(dir.File("proxy.textproto")) << ConfigText();
    auto config = *proxy::LoadProxyConfig(dir.File("proxy.textproto"));
    authenticator = std::make_unique<proxy::TokenAuthenticator>(*proxy::TokenAuthenticator::Create(config));
    fleet_client = std::make_unique<proxy::GrpcFleetClient>(fleet_stub.get());
    core =
        std::make_unique<proxy::ProxyCore>(config, proxy::ProxyCore::Deps{fleet_client.get(), &limiter, audit.get()});
    service = std::make_unique<proxy::TenantServiceImpl>(authenticator.get(), core.get());
    proxy_server = *proxy::StartTenantServer("127.0.0.1:0", pki.Issue("tenant-proxy", "proxy-public"),
                                             authenticator.get(), service.get());
  }
  ~Stack() {
    proxy_server.server->Shutdown();
    fleet_server.server->Shutdown();
    if (ledger_server.server) ledger_server.server->Shutdown();
    log_core.Stop();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("null"));
  }
  void StartLedger(const std::string& listen) {
    ledger_server = *ledger::StartLedgerServer("ppn.test", listen, pki.Issue("ledger", "ledger"), &ledger_service);
    ledger_port = ledger_server.port;
  }
  void StopLedger() {
    ledger_server.server->Shutdown();
    ledger_server.server.reset();
  }
  std::unique_ptr<TenantService::Stub> Tenant() {
    return TenantService::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(proxy_server.port),
                                                      TlsChannelCredentials(pki.ca_cert_path())));
  }
};

void Auth(grpc::ClientContext* ctx, const std::string& header) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!header.empty()) ctx->AddMetadata("authorization", header);
}

CreateVmRequest CreateRequest(const std::string& name, const std::string& request_id = "", uint32_t disk_gib = 0) {
  CreateVmRequest req;
  req.mutable_spec()->set_display_name(name);
  req.mutable_spec()->set_vcpus(1);
  req.mutable_spec()->set_memory_mib(256);
  req.mutable_spec()->set_image("debian-12");
  req.mutable_spec()->set_disk_gib(disk_gib);
  req.set_request_id(request_id);
  return req;
}

grpc::Status Create(TenantService::Stub* stub, const std::string& token, const CreateVmRequest& req, Vm* out = nullptr,
                    grpc::ClientContext* given = nullptr) {
  CreateVmResponse resp;
  grpc::ClientContext own;
  grpc::ClientContext& ctx = given != nullptr ? *given : own;
  Auth(&ctx, token.empty() ? "" : "Bearer " + token);
  grpc::Status s = stub->CreateVm(&ctx, req, &resp);
  if (out != nullptr) *out = resp.vm();
  return s;
}

grpc::Status Create(TenantService::Stub* stub, const std::string& token, const std::string& name, Vm* out = nullptr,
                    const std::string& claimed_tenant = "") {
  CreateVmRequest req = CreateRequest(name);
  if (!claimed_tenant.empty()) (*req.mutable_spec()->mutable_labels())["tenant_id"] = claimed_tenant;
  return Create(stub, token, req, out);
}

TEST_CASE("missing malformed wrong and revoked tokens are UNAUTHENTICATED and nothing is forwarded", "[proxy][auth]") {
  Stack s;
  auto stub = s.Tenant();
  for (const std::string header :
       {std::string(), std::string("acme-secret-token-4f9d2c"), std::string("Basic abc"), std::string("Bearer "),
        std::string("Bearer wrong-token"), std::string("Bearer ") + kAcmeOldToken}) {
    INFO("authorization: " << header);
    CreateVmRequest req;
    req.mutable_spec()->set_display_name("x");
    CreateVmResponse resp;
    grpc::ClientContext ctx;
    Auth(&ctx, header);
    grpc::Status st = stub->CreateVm(&ctx, req, &resp);
    CHECK(st.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK(st.error_message().find("bearer token") != std::string::npos);
  }
  CHECK(s.agents.vms().empty());
  CHECK(s.fleet_core.ListVms(fleet::Scope{}, {})->vms_size() == 0);
  Vm vm;
  CHECK(Create(stub.get(), kAcmeToken, "ok", &vm).ok());
}

TEST_CASE("a tenant cannot see get watch or destroy another tenant's VM", "[proxy][isolation]") {
  Stack s;
  auto stub = s.Tenant();
  Vm mine;
  REQUIRE(Create(stub.get(), kAcmeToken, "web", &mine, /*claimed_tenant=*/"globex").ok());
  CHECK(mine.name() == "vms/" + mine.vm_id());
  CHECK(s.fleet_core.GetVm(fleet::Scope{"acme"}, mine.vm_id()).ok());  // owned by the token's tenant

  auto as_globex = [&](auto call) {
    grpc::ClientContext ctx;
    Auth(&ctx, std::string("Bearer ") + kGlobexToken);
    return call(&ctx);
  };
  GetVmRequest get;
  get.set_name(mine.name());
  GetVmResponse got;
  grpc::Status other = as_globex([&](grpc::ClientContext* c) { return stub->GetVm(c, get, &got); });
  CHECK(other.error_code() == grpc::StatusCode::NOT_FOUND);
  get.set_name("vms/vm-0000000000000000000");
  grpc::Status absent = as_globex([&](grpc::ClientContext* c) { return stub->GetVm(c, get, &got); });
  CHECK(absent.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(other.error_message() == "vm " + mine.vm_id() + " not found");  // same words as for a missing VM

  DestroyVmRequest destroy;
  destroy.set_name(mine.name());
  DestroyVmResponse destroyed;
  CHECK(as_globex([&](grpc::ClientContext* c) { return stub->DestroyVm(c, destroy, &destroyed); }).error_code() ==
        grpc::StatusCode::NOT_FOUND);
  ListVmsResponse list;
  CHECK(as_globex([&](grpc::ClientContext* c) { return stub->ListVms(c, {}, &list); }).ok());
  CHECK(list.vms_size() == 0);
  WatchVmRequest watch;
  watch.set_name(mine.name());
  grpc::ClientContext wctx;
  Auth(&wctx, std::string("Bearer ") + kGlobexToken);
  auto reader = stub->WatchVm(&wctx, watch);
  WatchVmResponse msg;
  CHECK_FALSE(reader->Read(&msg));
  CHECK(reader->Finish().error_code() == grpc::StatusCode::NOT_FOUND);

  SECTION("the owner watches its VM until it is destroyed") {
    grpc::ClientContext ctx;
    Auth(&ctx, std::string("Bearer ") + kAcmeToken);
    auto mine_reader = stub->WatchVm(&ctx, watch);
    REQUIRE(mine_reader->Read(&msg));
    CHECK(msg.vm().state() == ppn::types::v1::VM_STATE_RUNNING);
    grpc::ClientContext dctx;
    Auth(&dctx, std::string("Bearer ") + kAcmeToken);
    grpc::Status st = stub->DestroyVm(&dctx, destroy, &destroyed);
    INFO(st.error_message());
    REQUIRE(st.ok());
    REQUIRE(mine_reader->Read(&msg));
    CHECK(msg.vm().state() == ppn::types::v1::VM_STATE_DESTROYED);
    CHECK_FALSE(mine_reader->Read(&msg));
    CHECK(mine_reader->Finish().ok());
  }
}

TEST_CASE("100 concurrent creates with a quota of 5 create exactly 5", "[proxy][quota]") {
  Stack s;
  std::atomic<int> ok{0}, quota{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 100; ++i) {
    threads.emplace_back([&, i] {
      auto stub = s.Tenant();
      grpc::Status st = Create(stub.get(), kAcmeToken, "vm-" + std::to_string(i));
      if (st.ok()) {
        ++ok;
      } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
                 st.error_message() == "VM quota of 5 reached") {
        ++quota;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 5);
  CHECK(quota == 95);
  CHECK(other == 0);
  auto stub = s.Tenant();
  GetQuotaResponse q;
  grpc::ClientContext ctx;
  Auth(&ctx, std::string("Bearer ") + kAcmeToken);
  REQUIRE(stub->GetQuota(&ctx, {}, &q).ok());
  CHECK(q.tenant_id() == "acme");
  CHECK(q.usage().vms() == 5);
  CHECK(q.usage().memory_mib() == 5 * 256);
  CHECK(q.limits().max_vms() == 5);
}

TEST_CASE("the rate limit refuses a burst with retry information", "[proxy][rate]") {
  Stack s;
  auto stub = s.Tenant();
  int limited = 0;
  for (int i = 0; i < 3; ++i) {
    ListVmsResponse list;
    grpc::ClientContext ctx;
    Auth(&ctx, std::string("Bearer ") + kSlowToken);
    grpc::Status st = stub->ListVms(&ctx, {}, &list);
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++limited;
      CHECK(st.error_message().find("rate limit of 1 requests/s (burst 2) reached; retry in") == 0);
      auto trailers = ctx.GetServerTrailingMetadata();
      REQUIRE(trailers.count("retry-after-ms") == 1);
      std::string ms(trailers.find("retry-after-ms")->second.data(), trailers.find("retry-after-ms")->second.size());
      INFO("retry-after-ms: " << ms);
      CHECK(!ms.empty());
      CHECK(ms.find_first_not_of("0123456789") == std::string::npos);  // a bare integer, no " ms"
      CHECK(st.error_message() == "rate limit of 1 requests/s (burst 2) reached; retry in " + ms + " ms");
    }
  }
  CHECK(limited == 1);
}

TEST_CASE("every operation is audited locally and in the ledger, and the spool survives a ledger outage",
          "[proxy][audit]") {
  Stack s;
  auto stub = s.Tenant();
  Vm a, b;
  REQUIRE(Create(stub.get(), kAcmeToken, "first", &a).ok());
  int ledger_port = s.ledger_port;

  s.StopLedger();
  REQUIRE(Create(stub.get(), kAcmeToken, "second", &b).ok());  // the ledger is down: still answered
  CHECK(Create(stub.get(), kAcmeToken, "Bad Name").error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  DestroyVmRequest destroy;
  destroy.set_name(b.name());
  DestroyVmResponse destroyed;
  grpc::ClientContext dctx;
  Auth(&dctx, std::string("Bearer ") + kAcmeToken);
  REQUIRE(stub->DestroyVm(&dctx, destroy, &destroyed).ok());
  s.audit->DeliverOnce();
  CHECK(s.audit->Pending() >= 5);

  s.StartLedger("127.0.0.1:" + std::to_string(ledger_port));
  // The channel reconnects with backoff; delivery retries until it gets through.
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (s.audit->Pending() > 0 && absl::Now() < deadline) {
    s.audit->DeliverOnce();
    absl::SleepFor(absl::Milliseconds(200));
  }
  s.audit->DeliverOnce();  // another pass must not duplicate anything
  CHECK(s.audit->Pending() == 0);

  // Each create and destroy: its intent before it was forwarded, its outcome after; the
  // malformed create was refused before anything was forwarded.
  std::vector<std::string> local;
  std::ifstream in(s.dir.File("audit.jsonl"));
  for (std::string line; std::getline(in, line);) local.push_back(line);
  REQUIRE(local.size() == 7);
  CHECK(local[4].find("\"outcome\":\"OUTCOME_DENIED\"") != std::string::npos);
  for (int pending : {0, 2, 5}) CHECK(local[pending].find("\"outcome\":\"OUTCOME_PENDING\"") != std::string::npos);

  auto entries = *s.log_core.GetEntries(0, 100, "");
  REQUIRE(entries.size() == 7);  // once each, in order
  CHECK(entries[0].kind() == "tenant.vm.create");
  CHECK(entries[0].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
  CHECK(entries[0].attributes().at("display_name") == "first");
  CHECK(entries[1].subject() == a.vm_id());
  CHECK(entries[1].outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  CHECK(entries[2].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
  CHECK(entries[3].subject() == b.vm_id());
  CHECK(entries[4].outcome() == ppn::ledger::v1::OUTCOME_DENIED);
  CHECK(entries[5].kind() == "tenant.vm.destroy");
  CHECK(entries[5].subject() == b.vm_id());
  CHECK(entries[5].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
  CHECK(entries[6].kind() == "tenant.vm.destroy");
  CHECK(entries[6].outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  auto checkpoint = *s.log_core.Checkpoint();
  for (const auto& e : entries) {
    CHECK(e.tenant_id() == "acme");
    CHECK(e.actor() == "spiffe://ppn.test/tenant-proxy/proxy");
    auto proof = *s.log_core.ProveInclusion(e.index(), checkpoint.tree_size);
    CHECK(
        ledger::VerifyInclusion(e.index(), checkpoint.tree_size, e.leaf_hash(), proof.path, checkpoint.root_hash).ok());
  }

  // No token anywhere: log, audit file, ledger.
  std::string everything = s.log.str() + ppn::testing::ReadAll(s.dir.File("audit.jsonl"));
  for (const auto& e : entries) everything += e.SerializeAsString();
  for (const char* token : {kAcmeToken, kGlobexToken, kAcmeOldToken})
    CHECK(everything.find(token) == std::string::npos);
  CHECK(s.log.str().find("tenant.vm.created tenant=acme") != std::string::npos);
}

std::vector<nlohmann::json> AuditLines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Delivers the stack's audit spool to its ledger and returns every entry.
std::vector<ppn::ledger::v1::Entry> DeliveredEntries(Stack& s) {
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (s.audit->Pending() > 0 && absl::Now() < deadline) {
    s.audit->DeliverOnce();
    if (s.audit->Pending() > 0) absl::SleepFor(absl::Milliseconds(100));
  }
  return *s.log_core.GetEntries(0, 1000, "");
}

TEST_CASE("a malformed spec is INVALID_ARGUMENT before quota even when the quota is used up",
          "[proxy][quota][validation]") {
  Stack s;
  auto stub = s.Tenant();
  REQUIRE(Create(stub.get(), kInitechToken, CreateRequest("one")).ok());
  REQUIRE(Create(stub.get(), kInitechToken, CreateRequest("two")).ok());  // max_vms 2: full
  CreateVmRequest huge = CreateRequest("three");
  huge.mutable_spec()->set_memory_mib(1u << 31);
  grpc::Status memory = Create(stub.get(), kInitechToken, huge);
  CHECK(memory.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(memory.error_message().find("memory_mib") != std::string::npos);
  CreateVmRequest wide = CreateRequest("three");
  wide.mutable_spec()->set_vcpus(65);
  grpc::Status vcpus = Create(stub.get(), kInitechToken, wide);
  CHECK(vcpus.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(vcpus.error_message().find("vcpus") != std::string::npos);
  grpc::Status full = Create(stub.get(), kInitechToken, CreateRequest("three"));
  CHECK(full.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(full.error_message() == "VM quota of 2 reached");
}

TEST_CASE("the disk quota refuses a VM whose disk would exceed it", "[proxy][quota][disk]") {
  Stack s;
  auto stub = s.Tenant();
  REQUIRE(Create(stub.get(), kInitechToken, CreateRequest("big", "", 15)).ok());
  grpc::Status over = Create(stub.get(), kInitechToken, CreateRequest("more", "", 6));
  CHECK(over.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(over.error_message() == "disk quota of 20 GiB would be exceeded (15 in use)");
  CHECK(Create(stub.get(), kInitechToken, CreateRequest("more", "", 5)).ok());
  GetQuotaResponse q;
  grpc::ClientContext ctx;
  Auth(&ctx, std::string("Bearer ") + kInitechToken);
  REQUIRE(stub->GetQuota(&ctx, {}, &q).ok());
  CHECK(q.usage().disk_gib() == 20);
  CHECK(q.limits().max_disk_gib() == 20);
  // acme has no disk limit (0): a disk far beyond initech's whole quota passes (the node
  // reports 1 TiB free).
  CHECK(Create(stub.get(), kAcmeToken, CreateRequest("huge-disk", "", 500)).ok());
}

TEST_CASE("200 rate-limited creates make one aggregated ledger entry not 200", "[proxy][rate][audit]") {
  Stack s;
  auto stub = s.Tenant();
  int admitted = 0, limited = 0;
  for (int i = 0; i < 202; ++i) {
    grpc::Status st = Create(stub.get(), kSlowToken, CreateRequest("burst-" + std::to_string(i)));
    if (st.ok()) {
      ++admitted;
    } else {
      REQUIRE(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
      ++limited;
    }
  }
  INFO("admitted " << admitted << ", limited " << limited);
  REQUIRE(limited >= 150);
  REQUIRE(*s.audit->FlushRateLimited(/*all=*/true) >= 1);
  auto entries = DeliveredEntries(s);
  int creates = 0, windows = 0;
  int64_t counted = 0;
  for (const auto& e : entries) {
    if (e.kind() == "tenant.vm.create") ++creates;
    if (e.kind() == "tenant.rate_limit") {
      ++windows;
      CHECK(e.tenant_id() == "slow");
      CHECK(e.outcome() == ppn::ledger::v1::OUTCOME_DENIED);
      int64_t n = 0;
      REQUIRE(absl::SimpleAtoi(e.attributes().at("count"), &n));
      counted += n;
    }
  }
  CHECK(creates == 2 * admitted);  // intent and outcome of each admitted create
  CHECK(windows >= 1);
  CHECK(windows <= 2);  // one per 10 s window; the burst takes well under 20 s
  CHECK(counted == limited);
  CHECK(entries.size() == static_cast<size_t>(creates + windows));
  CHECK(AuditLines(s.dir.File("audit.jsonl")).size() == entries.size());
}

// The real tenant_proxy binary, its state in `<dir>/proxy`, serving tenants with the stack's
// config and forwarding to `fleet_port`; killed (SIGKILL) when destroyed.
struct ProxyProcess {
  ProxyProcess(Stack& s, int fleet_port, std::vector<std::string> extra = {}) : stack(s) {
    static std::atomic<int> starts{0};
    std::string port_file = s.dir.File("proxy.port." + std::to_string(++starts));
    TlsFiles tls = s.pki.Issue("tenant-proxy", "proxy-process");
    std::vector<std::string> argv = {ppn::testing::RunfilePath("tenant_proxy/tenant_proxy"),
                                     "--mesh=ppn.test",
                                     "--listen=127.0.0.1:0",
                                     "--tls_ca=" + tls.ca_cert,
                                     "--tls_cert=" + tls.cert,
                                     "--tls_key=" + tls.key,
                                     "--config=" + s.dir.File("proxy.textproto"),
                                     "--fleet=127.0.0.1:" + std::to_string(fleet_port),
                                     "--ledger=127.0.0.1:" + std::to_string(s.ledger_port),
                                     "--state_dir=" + s.dir.File("proxy"),
                                     "--port_file=" + port_file};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process = std::make_unique<ppn::testing::Subprocess>(argv, s.dir.File("proxy.log"));
    port = ppn::testing::WaitForPortFile(port_file, absl::Seconds(30));
  }
  void Kill() {
    process->Signal(SIGKILL);
    process->Wait(absl::Seconds(10));
  }
  // The process's thread count (what `ps -o nlwp` shows).
  int Threads() const {
    std::ifstream in("/proc/" + std::to_string(process->pid()) + "/status");
    for (std::string line; std::getline(in, line);) {
      int n = 0;
      if (line.rfind("Threads:", 0) == 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &n)) return n;
    }
    return -1;
  }
  std::unique_ptr<TenantService::Stub> Tenant() const {
    return TenantService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), TlsChannelCredentials(stack.pki.ca_cert_path())));
  }

  Stack& stack;
  std::unique_ptr<ppn::testing::Subprocess> process;
  int port = 0;
};

TEST_CASE("a proxy killed while the fleet creates a VM leaves a record naming the request", "[proxy][audit][crash]") {
  Stack s;
  proxy::testing::FakeFleetService fake;
  absl::Notification at_fleet, killed;
  fake.OnCreate([&](const ppn::fleet::v1::CreateVmRequest&) {
    at_fleet.Notify();
    killed.WaitForNotificationWithTimeout(absl::Seconds(60));
  });
  StartedServer fleet = *proxy::testing::StartMeshFleet("ppn.test", s.pki.Issue("fleet", "fake-fleet"), &fake);
  {
    ProxyProcess proxy(s, fleet.port);
    auto stub = proxy.Tenant();
    grpc::Status answered;
    std::thread tenant([&] { answered = Create(stub.get(), kAcmeToken, CreateRequest("doomed", "r-kill")); });
    REQUIRE(at_fleet.WaitForNotificationWithTimeout(absl::Seconds(30)));
    proxy.Kill();  // the fleet has the VM; the proxy never hears back
    killed.Notify();
    tenant.join();
    CHECK_FALSE(answered.ok());
  }
  REQUIRE(fake.FindByRequestId("r-kill").has_value());

  auto lines = AuditLines(s.dir.File("proxy/audit.jsonl"));
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["operation"] == "tenant.vm.create");
  CHECK(lines[0]["outcome"] == "OUTCOME_PENDING");
  CHECK(lines[0]["tenant"] == "acme");
  CHECK(lines[0]["request_id"] == "r-kill");
  CHECK(lines[0]["display_name"] == "doomed");

  // In the ledger too: at once, or from the spool once the proxy is back.
  ProxyProcess restarted(s, fleet.port);
  std::vector<ppn::ledger::v1::Entry> entries;
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    entries = *s.log_core.GetEntries(0, 100, "");
    if (!entries.empty()) break;
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < deadline);
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].kind() == "tenant.vm.create");
  CHECK(entries[0].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
  CHECK(entries[0].attributes().at("request_id") == "r-kill");
  fleet.server->Shutdown();
}

TEST_CASE("300 WatchVm streams hold no proxy thread each and the cap refuses the next", "[proxy][watch][threads]") {
  Stack s;
  const int kStreams = 300;
  ProxyProcess proxy(s, s.fleet_server.port, {"--max_watch_streams=" + std::to_string(kStreams)});
  auto stub = proxy.Tenant();
  Vm vm;
  REQUIRE(Create(stub.get(), kAcmeToken, CreateRequest("watched"), &vm).ok());
  WatchVmRequest req;
  req.set_name(vm.name());
  int idle = proxy.Threads();

  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<WatchVmResponse>>> readers;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->AddMetadata("authorization", std::string("Bearer ") + kAcmeToken);
    readers.push_back(stub->WatchVm(contexts.back().get(), req));
    WatchVmResponse msg;
    REQUIRE(readers.back()->Read(&msg));
    REQUIRE(msg.vm().state() == ppn::types::v1::VM_STATE_RUNNING);
  }
  absl::SleepFor(absl::Milliseconds(500));  // let any thread that would be started start
  int busy = proxy.Threads();
  std::printf("tenant_proxy threads: %d idle, %d with %d WatchVm streams open\n", idle, busy, kStreams);
  INFO("threads idle " << idle << ", with " << kStreams << " streams " << busy);
  CHECK(idle > 0);
  CHECK(busy < idle + 40);

  grpc::ClientContext one_more;
  Auth(&one_more, std::string("Bearer ") + kAcmeToken);
  auto refused = stub->WatchVm(&one_more, req);
  WatchVmResponse msg;
  CHECK_FALSE(refused->Read(&msg));
  grpc::Status st = refused->Finish();
  CHECK(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(st.error_message() == "at most 300 WatchVm streams per tenant; close one first");

  // Another tenant is not held back by acme's streams.
  Vm theirs;
  REQUIRE(Create(stub.get(), kGlobexToken, CreateRequest("theirs"), &theirs).ok());
  grpc::ClientContext globex;
  globex.AddMetadata("authorization", std::string("Bearer ") + kGlobexToken);
  WatchVmRequest their_req;
  their_req.set_name(theirs.name());
  auto their_reader = stub->WatchVm(&globex, their_req);
  CHECK(their_reader->Read(&msg));
  globex.TryCancel();
  their_reader->Finish();

  for (auto& ctx : contexts) ctx->TryCancel();
  for (auto& r : readers) CHECK(r->Finish().error_code() == grpc::StatusCode::CANCELLED);
  // Cancelled streams give their slots back.
  grpc::ClientContext after;
  after.AddMetadata("authorization", std::string("Bearer ") + kAcmeToken);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  bool read = false;
  while (!read && absl::Now() < deadline) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", std::string("Bearer ") + kAcmeToken);
    auto r = stub->WatchVm(ctx.get(), req);
    read = r->Read(&msg);
    ctx->TryCancel();
    r->Finish();
    if (!read) absl::SleepFor(absl::Milliseconds(100));
  }
  CHECK(read);
}

TEST_CASE("a retry with the same request_id at the quota returns the original VM and is audited once",
          "[proxy][retry][needs-fleet-request-id]") {
  // Needs the fleet to list request_id on its records and answer `replayed` (contract C2).
  Stack s;
  auto stub = s.Tenant();
  Vm first, again;
  REQUIRE(Create(stub.get(), kInitechToken, CreateRequest("web", "r-1"), &first).ok());
  REQUIRE(Create(stub.get(), kInitechToken, CreateRequest("other")).ok());  // max_vms 2: full
  size_t audited = AuditLines(s.dir.File("audit.jsonl")).size();
  grpc::Status retry = Create(stub.get(), kInitechToken, CreateRequest("web", "r-1"), &again);
  INFO(retry.error_message());
  REQUIRE(retry.ok());
  CHECK(again.vm_id() == first.vm_id());
  CHECK(AuditLines(s.dir.File("audit.jsonl")).size() == audited);  // the retry adds nothing

  SECTION("the same request_id with another spec is ALREADY_EXISTS in plain words") {
    CreateVmRequest other = CreateRequest("web", "r-1");
    other.mutable_spec()->set_memory_mib(512);
    grpc::Status st = Create(stub.get(), kInitechToken, other);
    CHECK(st.error_code() == grpc::StatusCode::ALREADY_EXISTS);
    CHECK(st.error_message() ==
          "request_id r-1 was used for a different VM; use a new request_id for a new VM, or resend the original "
          "request");
  }
}

TEST_CASE("a fleet with no disk for a VM tells the tenant so", "[proxy][disk][needs-fleet-disk-placement]") {
  // Needs the fleet to place by disk and set `ppn-shortage: disk` (contract C2).
  Stack s;
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id("laptop-a");
  hb.set_available_memory_mib(64 * 1024);
  hb.set_disk_total_mib(100 * 1024);
  hb.set_disk_available_mib(512);
  for (const char* image : {"debian-12", "ppn-test-guest"}) hb.add_images(image);
  s.fleet_core.OnHeartbeat(hb);
  auto stub = s.Tenant();
  grpc::Status st = Create(stub.get(), kAcmeToken, CreateRequest("wide-disk", "", 50));
  CHECK(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(st.error_message() == "no host has disk space for this VM right now; try a smaller disk or later");
}

grpc::Status UpdateNetwork(TenantService::Stub* stub, const std::string& token, const UpdateVmNetworkRequest& req,
                           Vm* out = nullptr) {
  UpdateVmNetworkResponse resp;
  grpc::ClientContext ctx;
  Auth(&ctx, "Bearer " + token);
  grpc::Status s = stub->UpdateVmNetwork(&ctx, req, &resp);
  if (out != nullptr) *out = resp.vm();
  return s;
}

ppn::types::v1::EgressRule Rule(const std::string& cidr, uint32_t port = 0) {
  ppn::types::v1::EgressRule r;
  r.set_cidr(cidr);
  r.set_port_first(port);
  return r;
}

TEST_CASE("a tenant's network change reaches its VM's agent narrowed to the tenant's policy and GetVm shows it",
          "[proxy][egress]") {
  Stack s;
  auto stub = s.Tenant();
  Vm vm;
  REQUIRE(Create(stub.get(), kUmbrellaToken, "web", &vm).ok());
  // At create: the VM asked for nothing, so its agent was given the tenant's default.
  auto spawned = s.agents.Egress("laptop-a", vm.vm_id());
  REQUIRE(spawned.has_value());
  CHECK(spawned->internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
  CHECK(spawned->allow_size() == 1);
  CHECK(spawned->rate_limit_kbit() == 5000);
  CHECK(vm.spec().egress().SerializeAsString() == spawned->SerializeAsString());

  UpdateVmNetworkRequest req;
  req.set_name(vm.name());
  req.mutable_egress()->set_internet(ppn::types::v1::INTERNET_ACCESS_ALLOWED);  // more than allowed: stays denied
  *req.mutable_egress()->add_allow() = Rule("203.0.113.7", 443);
  *req.mutable_egress()->add_deny() = Rule("203.0.113.8");
  req.mutable_egress()->set_rate_limit_kbit(20000);  // above the tenant's: the tenant's applies
  Vm updated;
  grpc::Status st = UpdateNetwork(stub.get(), kUmbrellaToken, req, &updated);
  INFO(st.error_message());
  REQUIRE(st.ok());
  auto applied = s.agents.Egress("laptop-a", vm.vm_id());
  REQUIRE(applied.has_value());
  CHECK(applied->internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
  REQUIRE(applied->allow_size() == 1);
  CHECK(applied->allow(0).cidr() == "203.0.113.7");
  CHECK(applied->allow(0).port_first() == 443);
  REQUIRE(applied->deny_size() == 2);  // the tenant's and the VM's
  CHECK(applied->deny(0).cidr() == "203.0.113.66");
  CHECK(applied->deny(1).cidr() == "203.0.113.8");
  CHECK(applied->rate_limit_kbit() == 5000);
  CHECK(updated.spec().egress().SerializeAsString() == applied->SerializeAsString());

  // Its node reports traffic: GetVm shows the policy in effect and the counters.
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id("laptop-a");
  hb.set_available_memory_mib(64 * 1024);
  hb.set_disk_total_mib(1 << 20);
  hb.set_disk_available_mib(1 << 20);
  for (const char* image : {"debian-12", "ppn-test-guest"}) hb.add_images(image);
  for (auto instance : s.agents.Instances("laptop-a")) {
    instance.mutable_network()->set_tx_bytes(4096);
    instance.mutable_network()->set_tx_packets(3);
    *hb.add_vms() = instance;
  }
  s.fleet_core.OnHeartbeat(hb);
  GetVmRequest get;
  get.set_name(vm.name());
  GetVmResponse got;
  grpc::ClientContext gctx;
  Auth(&gctx, std::string("Bearer ") + kUmbrellaToken);
  REQUIRE(stub->GetVm(&gctx, get, &got).ok());
  CHECK(got.vm().spec().egress().SerializeAsString() == applied->SerializeAsString());
  CHECK(got.vm().network().tx_bytes() == 4096);
  CHECK(got.vm().network().tx_packets() == 3);
  CHECK(got.SerializeAsString().find("laptop-a") == std::string::npos);

  // Another tenant cannot change it, and learns nothing from trying.
  grpc::Status theirs = UpdateNetwork(stub.get(), kAcmeToken, req);
  CHECK(theirs.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(theirs.error_message() == "vm " + vm.vm_id() + " not found");
  // More than the tenant may reach is refused, and nothing reaches the agent.
  UpdateVmNetworkRequest wide;
  wide.set_name(vm.name());
  *wide.mutable_egress()->add_allow() = Rule("198.51.100.0/24");
  grpc::Status denied = UpdateNetwork(stub.get(), kUmbrellaToken, wide);
  CHECK(denied.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(denied.error_message() == "egress.allow rule 198.51.100.0/24 is outside what this tenant may reach");
  CHECK(s.agents.Egress("laptop-a", vm.vm_id())->SerializeAsString() == applied->SerializeAsString());

  // Audited like a create: the intent, the outcome, the refusals; the shape, not the destinations.
  std::vector<ppn::ledger::v1::Entry> network;
  for (auto& e : DeliveredEntries(s)) {
    if (e.kind() == "tenant.vm.network") network.push_back(e);
  }
  // The change's intent and success; acme's attempt (forwarded, NOT_FOUND: only the fleet knows
  // whose a VM is); the PERMISSION_DENIED, refused before anything was forwarded.
  REQUIRE(network.size() == 5);
  CHECK(network[0].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
  CHECK(network[1].outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  CHECK(network[1].subject() == vm.vm_id());
  CHECK(network[1].attributes().at("egress_deny_rules") == "2");
  CHECK(network[1].attributes().at("egress_rate_limit_kbit") == "5000");
  CHECK(network[2].tenant_id() == "acme");
  CHECK(network[3].tenant_id() == "acme");
  CHECK(network[3].attributes().at("detail") == "NOT_FOUND");
  CHECK(network[4].tenant_id() == "umbrella");
  CHECK(network[4].outcome() == ppn::ledger::v1::OUTCOME_DENIED);
  CHECK(network[4].attributes().at("detail") == "PERMISSION_DENIED");
  for (const auto& e : network) CHECK(e.SerializeAsString().find("203.0.113") == std::string::npos);
}

TEST_CASE("the proxy binary refuses a config whose tenant egress default is malformed with one line",
          "[proxy][egress][config]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki("ppn.test");
  TlsFiles tls = pki.Issue("tenant-proxy", "proxy-process");
  std::ofstream(dir.File("bad.textproto")) << "tenants { tenant_id: \"acme\" egress { deny { cidr: \"10.0.0.0/8\" "
                                              "port_first: 90 port_last: 80 } } }\n";
  ppn::testing::RunResult r = ppn::testing::Run(
      {ppn::testing::RunfilePath("tenant_proxy/tenant_proxy"), "--mesh=ppn.test", "--listen=127.0.0.1:0",
       "--tls_ca=" + tls.ca_cert, "--tls_cert=" + tls.cert, "--tls_key=" + tls.key,
       "--config=" + dir.File("bad.textproto"), "--state_dir=" + dir.File("proxy")},
      dir.File("proxy.out"), absl::Seconds(30));
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("tenant acme's default egress.deny rule ports must be 1-65535 with port_first <= port_last") !=
        std::string::npos);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

TEST_CASE("the example C++ and Python clients create list and destroy a VM", "[proxy][examples]") {
  Stack s;
  std::string token_file = s.dir.File("acme.token");
  std::ofstream(token_file) << kAcmeToken << "\n";
  std::string endpoint = "127.0.0.1:" + std::to_string(s.proxy_server.port);
  auto run = [&](std::vector<std::string> argv, const std::string& out) {
    ppn::testing::RunResult r = ppn::testing::Run(argv, out, absl::Seconds(60));
    INFO(r.output);
    CHECK(r.exit_code == 0);
    return r.output;
  };
  std::string cpp = ppn::testing::RunfilePath("examples/cpp/tenant_client");
  std::string created = run({cpp, "--endpoint=" + endpoint, "--ca=" + s.pki.ca_cert_path(),
                             "--token_file=" + token_file, "create", "from-cpp"},
                            s.dir.File("cpp-create.out"));
  CHECK(created.find("from-cpp  VM_STATE_RUNNING") != std::string::npos);

  std::string py = ppn::testing::RunfilePath("examples/python/tenant_client.py");
  std::string gen = ppn::testing::RunfilePath("examples/python/gen");
  setenv("PYTHONPATH", gen.c_str(), 1);
  std::string listed = run({"/usr/bin/python3", py, "--endpoint", endpoint, "--ca", s.pki.ca_cert_path(),
                            "--token-file", token_file, "list"},
                           s.dir.File("py-list.out"));
  CHECK(listed.find("from-cpp  VM_STATE_RUNNING") != std::string::npos);
  std::string name = listed.substr(0, listed.find(' '));
  std::string destroyed = run({"/usr/bin/python3", py, "--endpoint", endpoint, "--ca", s.pki.ca_cert_path(),
                               "--token-file", token_file, "destroy", name},
                              s.dir.File("py-destroy.out"));
  CHECK(destroyed.find("VM_STATE_DESTROYED") != std::string::npos);
  unsetenv("PYTHONPATH");
}

}  // namespace
}  // namespace ppn
