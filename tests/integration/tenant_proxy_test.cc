// The tenant proxy over real sockets, in front of a real fleet (with fake host agents, so no
// QEMU is needed) and a real ledger: tokens, isolation, quotas, rate limits, the audit trail
// and its spool, and no token in any log.

#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/grpc_ledger_appender.h"
#include "common/random.h"
#include "fleet/fleet_server.h"
#include "fleet/testing/fake_agent_client.h"
#include "grpcpp/create_channel.h"
#include "ledger/ledger_server.h"
#include "ledger/merkle.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tenant_proxy/tenant_proxy_server.h"
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

std::string ConfigText() {
  std::ostringstream c;
  c << "tenants { tenant_id: \"acme\" token_sha256: \"" << proxy::TokenHash(kAcmeToken) << "\" revoked_token_sha256: \""
    << proxy::TokenHash(kAcmeOldToken) << "\" limits { max_vms: 5 max_vcpus: 16 max_memory_mib: 8192 } }\n"
    << "tenants { tenant_id: \"globex\" token_sha256: \"" << proxy::TokenHash(kGlobexToken)
    << "\" limits { max_vms: 10 max_vcpus: 32 max_memory_mib: 16384 } }\n"
    << "tenants { tenant_id: \"slow\" token_sha256: \"" << proxy::TokenHash(kSlowToken)
    << "\" limits { max_vms: 10 max_vcpus: 32 max_memory_mib: 16384 requests_per_second: 1 burst: 2 } }\n";
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
  std::unique_ptr<proxy::AuditTrail> audit;
  proxy::RateLimiter limiter{RealClock::Get()};
  std::unique_ptr<proxy::TokenAuthenticator> authenticator;
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
    fleet_core.AddNode("laptop-a", "unused:1");
    fleet_core.OnHeartbeat(hb);

    fleet_stub = ppn::fleet::v1::FleetService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(fleet_server.port), MtlsChannelCredentials(proxy_tls)));
    audit = *proxy::AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), RealClock::Get(),
                                     GrpcLedgerAppender("127.0.0.1:" + std::to_string(ledger_port), proxy_tls));
    std::ofstream(dir.File("proxy.textproto")) << ConfigText();
    auto config = *proxy::LoadProxyConfig(dir.File("proxy.textproto"));
    authenticator = std::make_unique<proxy::TokenAuthenticator>(*proxy::TokenAuthenticator::Create(config));
    service = std::make_unique<proxy::TenantServiceImpl>(config, authenticator.get(), fleet_stub.get(), &limiter,
                                                         audit.get());
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

grpc::Status Create(TenantService::Stub* stub, const std::string& token, const std::string& name, Vm* out = nullptr,
                    const std::string& claimed_tenant = "") {
  CreateVmRequest req;
  req.mutable_spec()->set_display_name(name);
  req.mutable_spec()->set_vcpus(1);
  req.mutable_spec()->set_memory_mib(256);
  req.mutable_spec()->set_image("debian-12");
  if (!claimed_tenant.empty()) (*req.mutable_spec()->mutable_labels())["tenant_id"] = claimed_tenant;
  CreateVmResponse resp;
  grpc::ClientContext ctx;
  Auth(&ctx, token.empty() ? "" : "Bearer " + token);
  grpc::Status s = stub->CreateVm(&ctx, req, &resp);
  if (out != nullptr) *out = resp.vm();
  return s;
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
    CHECK(msg.vm().state() == ppn::types::v1::VM_STATE_STOPPED);
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
      CHECK(ctx.GetServerTrailingMetadata().count("retry-after-ms") == 1);
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
  CHECK(s.audit->Pending() >= 3);

  s.StartLedger("127.0.0.1:" + std::to_string(ledger_port));
  // The channel reconnects with backoff; delivery retries until it gets through.
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (s.audit->Pending() > 0 && absl::Now() < deadline) {
    s.audit->DeliverOnce();
    absl::SleepFor(absl::Milliseconds(200));
  }
  s.audit->DeliverOnce();  // another pass must not duplicate anything
  CHECK(s.audit->Pending() == 0);

  std::vector<std::string> local;
  std::ifstream in(s.dir.File("audit.jsonl"));
  for (std::string line; std::getline(in, line);) local.push_back(line);
  REQUIRE(local.size() == 4);
  CHECK(local[2].find("\"outcome\":\"OUTCOME_DENIED\"") != std::string::npos);

  auto entries = *s.log_core.GetEntries(0, 100, "");
  REQUIRE(entries.size() == 4);  // once each, in order
  CHECK(entries[0].subject() == a.vm_id());
  CHECK(entries[1].subject() == b.vm_id());
  CHECK(entries[2].outcome() == ppn::ledger::v1::OUTCOME_DENIED);
  CHECK(entries[3].kind() == "tenant.vm.destroy");
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
  CHECK(destroyed.find("VM_STATE_STOPPED") != std::string::npos);
  unsetenv("PYTHONPATH");
}

}  // namespace
}  // namespace ppn
