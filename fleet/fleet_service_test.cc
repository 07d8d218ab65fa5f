// The fleet's gRPC adapter over real sockets (mTLS on 127.0.0.1:0) with fake host agents:
// what a caller of the fleet sees on the wire.

#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/ledger_outbox.h"
#include "common/random.h"
#include "fleet/fleet_server.h"
#include "fleet/testing/fake_agent_client.h"
#include "grpcpp/create_channel.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn::fleet {
namespace {

using v1::CreateVmRequest;
using v1::CreateVmResponse;
using v1::DestroyVmRequest;
using v1::DestroyVmResponse;
using v1::WatchVmRequest;
using v1::WatchVmResponse;

// Threads of this process now (what `ps -o nlwp` shows).
int Threads() {
  std::ifstream status("/proc/self/status");
  std::string text;
  while (std::getline(status, text)) {
    absl::string_view line = text;
    int n = 0;
    if (absl::ConsumePrefix(&line, "Threads:") && absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &n)) return n;
  }
  return -1;
}

struct Stack {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  testing::FakeAgentClientFactory agents;
  std::unique_ptr<VmStore> store = *VmStore::Open(dir.File("fleet.db"));
  absl::Mutex mu;
  std::vector<ppn::ledger::v1::AppendRequest> delivered;  // guarded by mu
  std::unique_ptr<LedgerOutbox> outbox =
      *LedgerOutbox::Open(dir.File("fleet.db.ledger-spool"), "fleet", [this](const ppn::ledger::v1::AppendRequest& r) {
        absl::MutexLock l(&mu);
        delivered.push_back(r);
        return absl::OkStatus();
      });
  FleetCore core;
  FleetService service{&core};
  StartedServer server;

  explicit Stack(FleetCore::Options options = {absl::Seconds(10)})
      : core({store.get(), &agents, RealClock::Get(), OpenSslRandom::Get(), outbox.get()}, options) {
    server = *StartFleetServer("ppn.test", "127.0.0.1:0", pki.Issue("fleet", "fleet"), &service);
    ppn::host::v1::Heartbeat hb;
    hb.set_node_id("laptop-a");
    hb.set_available_memory_mib(64 * 1024);
    hb.set_disk_total_mib(100 * 1024);
    hb.set_disk_available_mib(50 * 1024);
    hb.add_images("ppn-test-guest");
    core.AddNode("laptop-a", "unused:1");
    core.OnHeartbeat(hb);
  }
  ~Stack() { server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1)); }

  std::unique_ptr<v1::FleetService::Stub> Stub(const std::string& role) {
    return v1::FleetService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port), MtlsChannelCredentials(pki.Issue(role, role))));
  }
};

void AsTenant(grpc::ClientContext* ctx, const std::string& tenant) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ctx->AddMetadata("x-ppn-tenant-id", tenant);
}

CreateVmRequest Create(const std::string& name) {
  CreateVmRequest req;
  req.mutable_spec()->set_display_name(name);
  req.mutable_spec()->set_vcpus(1);
  req.mutable_spec()->set_memory_mib(128);
  req.mutable_spec()->set_image("ppn-test-guest");
  return req;
}

TEST_CASE("300 WatchVm streams do not hold a fleet thread each", "[fleet][watch]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->CreateVm(&ctx, Create("web"), &created).ok());
  }
  int before = Threads();
  constexpr int kStreams = 300;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<WatchVmResponse>>> streams;
  WatchVmRequest req;
  req.set_vm_id(created.vm().vm_id());
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    AsTenant(contexts.back().get(), "acme");
    streams.push_back(proxy->WatchVm(contexts.back().get(), req));
    WatchVmResponse first;
    REQUIRE(streams.back()->Read(&first));  // the stream is established and served
    CHECK(first.vm().vm_id() == created.vm().vm_id());
  }
  int during = Threads();
  WARN("threads: " << before << " before, " << during << " with " << kStreams << " WatchVm streams open");
  CHECK(during - before < 40);

  // Every stream still hears a change, and ends when the VM is destroyed.
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    DestroyVmRequest destroy;
    destroy.set_vm_id(created.vm().vm_id());
    DestroyVmResponse resp;
    REQUIRE(proxy->DestroyVm(&ctx, destroy, &resp).ok());
  }
  int stopped = 0;
  for (auto& stream : streams) {
    WatchVmResponse msg;
    while (stream->Read(&msg)) {
      if (msg.vm().state() == ppn::types::v1::VM_STATE_DESTROYED) ++stopped;
    }
    CHECK(stream->Finish().ok());
  }
  CHECK(stopped == kStreams);
}

TEST_CASE("WatchVm of another tenant's VM is NOT_FOUND and a cancelled watch ends", "[fleet][watch]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->CreateVm(&ctx, Create("web"), &created).ok());
  }
  WatchVmRequest req;
  req.set_vm_id(created.vm().vm_id());
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "globex");
    auto stream = proxy->WatchVm(&ctx, req);
    WatchVmResponse msg;
    CHECK_FALSE(stream->Read(&msg));
    grpc::Status st = stream->Finish();
    CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND);
    CHECK(st.error_message() == "vm " + created.vm().vm_id() + " not found");
  }
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    auto stream = proxy->WatchVm(&ctx, req);
    WatchVmResponse msg;
    REQUIRE(stream->Read(&msg));
    ctx.TryCancel();
    while (stream->Read(&msg)) {
    }
    CHECK(stream->Finish().error_code() == grpc::StatusCode::CANCELLED);
  }
}

TEST_CASE("WatchVm by a name follows that VM to its end, not a later VM given the same name", "[fleet][watch][names]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  CreateVmRequest web = Create("web");
  web.set_vm_id("web");
  CreateVmResponse first;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->CreateVm(&ctx, web, &first).ok());
  }
  WatchVmRequest req;
  req.set_vm_id("web");
  grpc::ClientContext ctx;
  AsTenant(&ctx, "acme");
  auto stream = proxy->WatchVm(&ctx, req);
  WatchVmResponse msg;
  REQUIRE(stream->Read(&msg));
  CHECK(msg.vm().vm_id() == first.vm().vm_id());
  CHECK(msg.vm().name() == "web");
  {
    // Another tenant watching the same name sees nothing of acme's.
    grpc::ClientContext other;
    AsTenant(&other, "globex");
    auto theirs = proxy->WatchVm(&other, req);
    WatchVmResponse none;
    CHECK_FALSE(theirs->Read(&none));
    grpc::Status st = theirs->Finish();
    CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND);
    CHECK(st.error_message() == "vm web not found");
  }
  REQUIRE(s.core.DestroyVm(Scope{"acme"}, "web", Actor::Tenant()).ok());
  CreateVmResponse second;
  {
    grpc::ClientContext create;
    AsTenant(&create, "acme");
    REQUIRE(proxy->CreateVm(&create, web, &second).ok());  // the name is free again
  }
  std::string last_id;
  while (stream->Read(&msg)) last_id = msg.vm().vm_id();
  CHECK(stream->Finish().ok());  // ended with the destroyed VM's last state
  CHECK(last_id == first.vm().vm_id());
  CHECK(second.vm().vm_id() != first.vm().vm_id());
}

TEST_CASE("a fleet shutting down with WatchVm streams open ends them and stops", "[fleet][watch]") {
  auto s = std::make_unique<Stack>();
  auto proxy = s->Stub("tenant-proxy");
  CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->CreateVm(&ctx, Create("web"), &created).ok());
  }
  WatchVmRequest req;
  req.set_vm_id(created.vm().vm_id());
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<WatchVmResponse>>> streams;
  for (int i = 0; i < 5; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    AsTenant(contexts.back().get(), "acme");
    streams.push_back(proxy->WatchVm(contexts.back().get(), req));
    WatchVmResponse first;
    REQUIRE(streams.back()->Read(&first));
  }
  CHECK(s->service.WatchesForTest() == 5);
  s.reset();  // Shutdown, then the service and its hub go
  for (auto& stream : streams) {
    WatchVmResponse msg;
    while (stream->Read(&msg)) {
    }
    CHECK_FALSE(stream->Finish().ok());
  }
}

TEST_CASE("a create the nodes cannot hold says which resource ran out in ppn-shortage", "[fleet][disk]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  struct Row {
    uint32_t memory_mib;
    uint32_t disk_gib;
    std::string shortage;
  };
  for (const Row& row : {Row{128, 4096, "disk"}, Row{1048576, 0, "memory"}}) {
    CreateVmRequest req = Create("big");
    req.mutable_spec()->set_memory_mib(row.memory_mib);
    req.mutable_spec()->set_disk_gib(row.disk_gib);
    CreateVmResponse resp;
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    grpc::Status st = proxy->CreateVm(&ctx, req, &resp);
    CHECK(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    auto it = ctx.GetServerTrailingMetadata().find("ppn-shortage");
    REQUIRE(it != ctx.GetServerTrailingMetadata().end());
    CHECK(std::string(it->second.data(), it->second.size()) == row.shortage);
  }
  // Another refusal carries none.
  CreateVmRequest bad = Create("bad");
  bad.mutable_spec()->set_image("debian-12");
  CreateVmResponse resp;
  grpc::ClientContext ctx;
  AsTenant(&ctx, "acme");
  grpc::Status st = proxy->CreateVm(&ctx, bad, &resp);
  CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(st.error_message() == "image debian-12 is not offered");
  CHECK(ctx.GetServerTrailingMetadata().count("ppn-shortage") == 0);
}

TEST_CASE("a retried create is replayed over the wire and a reused request_id is refused", "[fleet][idempotency]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  auto create = [&](const CreateVmRequest& req, CreateVmResponse* resp) {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    return proxy->CreateVm(&ctx, req, resp);
  };
  CreateVmRequest req = Create("web");
  req.set_request_id("req-1");
  CreateVmResponse first, again, other;
  REQUIRE(create(req, &first).ok());
  CHECK_FALSE(first.replayed());
  CHECK(first.vm().request_id() == "req-1");
  REQUIRE(create(req, &again).ok());
  CHECK(again.replayed());
  CHECK(again.vm().vm_id() == first.vm().vm_id());
  req.mutable_spec()->set_user_data("different");
  grpc::Status st = create(req, &other);
  CHECK(st.error_code() == grpc::StatusCode::ALREADY_EXISTS);
  CHECK(st.error_message() == "request_id req-1 was used for a different VM");
}

TEST_CASE("the role table lets the operator destroy any VM and keeps the scheduler out", "[fleet][authz]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->CreateVm(&ctx, Create("web"), &created).ok());
  }
  DestroyVmRequest destroy;
  destroy.set_vm_id(created.vm().vm_id());
  DestroyVmResponse resp;
  {
    grpc::ClientContext ctx;
    CHECK(s.Stub("scheduler")->DestroyVm(&ctx, destroy, &resp).error_code() == grpc::StatusCode::PERMISSION_DENIED);
  }
  grpc::ClientContext ctx;
  REQUIRE(s.Stub("operator")->DestroyVm(&ctx, destroy, &resp).ok());
  CHECK(resp.vm().state() == ppn::types::v1::VM_STATE_DESTROYED);
}

TEST_CASE("the operator destroys a tenant's VM by its name within that tenant and the ledger names the operator",
          "[fleet][authz][names]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  CreateVmResponse web, theirs;
  for (const char* tenant : {"acme", "globex"}) {
    grpc::ClientContext ctx;
    AsTenant(&ctx, tenant);
    CreateVmRequest req = Create("web");
    req.set_vm_id("web");
    REQUIRE(proxy->CreateVm(&ctx, req, std::string(tenant) == "acme" ? &web : &theirs).ok());
  }
  CHECK(web.vm().name() == "web");
  CHECK(web.vm().vm_id() != theirs.vm().vm_id());
  auto op = s.Stub("operator");
  DestroyVmRequest destroy;
  destroy.set_vm_id("web");
  DestroyVmResponse resp;
  {
    grpc::ClientContext ctx;
    grpc::Status st = op->DestroyVm(&ctx, destroy, &resp);
    CHECK(st.error_code() == grpc::StatusCode::FAILED_PRECONDITION);  // two tenants have one
  }
  {
    // A tenant-proxy peer cannot widen its scope through the body.
    grpc::ClientContext ctx;
    AsTenant(&ctx, "globex");
    destroy.set_tenant_id("acme");
    REQUIRE(proxy->DestroyVm(&ctx, destroy, &resp).ok());
    CHECK(resp.vm().vm_id() == theirs.vm().vm_id());
  }
  {
    grpc::ClientContext ctx;
    destroy.set_tenant_id("initech");
    CHECK(op->DestroyVm(&ctx, destroy, &resp).error_code() == grpc::StatusCode::NOT_FOUND);
  }
  grpc::ClientContext ctx;
  destroy.set_tenant_id("acme");
  grpc::Status st = op->DestroyVm(&ctx, destroy, &resp);
  INFO(st.error_message());
  REQUIRE(st.ok());
  CHECK(resp.vm().vm_id() == web.vm().vm_id());
  CHECK(resp.vm().tenant_id() == "acme");
  CHECK(s.agents.vms()["laptop-a"].empty());
  s.outbox->DeliverOnce();
  absl::MutexLock l(&s.mu);
  std::vector<std::string> destroys;
  for (const auto& e : s.delivered) {
    if (e.kind() != "vm.destroy") continue;
    const auto& a = e.attributes();
    destroys.push_back(absl::StrCat(e.tenant_id(), " ", e.subject(), " who=", a.at("who"), " role=", a.at("role"),
                                    " identity=", a.count("identity") ? a.at("identity") : "", " name=", a.at("name")));
  }
  CHECK(destroys == std::vector<std::string>{
                        "globex " + theirs.vm().vm_id() + " who=tenant role=tenant-proxy identity= name=web",
                        "acme " + web.vm().vm_id() +
                            " who=operator role=operator identity=spiffe://ppn.test/operator/operator name=web"});
}

TEST_CASE("UpdateVmNetwork is for the tenant proxy within its tenant and for the operator", "[fleet][authz][network]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->CreateVm(&ctx, Create("web"), &created).ok());
  }
  v1::UpdateVmNetworkRequest req;
  req.set_vm_id(created.vm().vm_id());
  req.mutable_egress()->set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  req.mutable_egress()->set_rate_limit_kbit(64);
  v1::UpdateVmNetworkResponse resp;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "globex");
    grpc::Status st = proxy->UpdateVmNetwork(&ctx, req, &resp);
    CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND);
    CHECK(st.error_message() == "vm " + created.vm().vm_id() + " not found");
  }
  {
    grpc::ClientContext ctx;
    CHECK(s.Stub("scheduler")->UpdateVmNetwork(&ctx, req, &resp).error_code() == grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->UpdateVmNetwork(&ctx, req, &resp).ok());
    CHECK(resp.vm().spec().egress().rate_limit_kbit() == 64);
  }
  req.mutable_egress()->set_rate_limit_kbit(32);
  grpc::ClientContext ctx;
  REQUIRE(s.Stub("operator")->UpdateVmNetwork(&ctx, req, &resp).ok());
  CHECK(resp.vm().spec().egress().rate_limit_kbit() == 32);
  CHECK(s.agents.Egress("laptop-a", created.vm().vm_id())->rate_limit_kbit() == 32);
}

TEST_CASE("a watch is not woken by traffic counters alone but carries them with a change", "[fleet][watch][network]") {
  Stack s;
  auto proxy = s.Stub("tenant-proxy");
  CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    REQUIRE(proxy->CreateVm(&ctx, Create("web"), &created).ok());
  }
  const std::string id = created.vm().vm_id();
  auto beat = [&](uint64_t tx_bytes) {
    ppn::host::v1::Heartbeat hb;
    hb.set_node_id("laptop-a");
    hb.set_available_memory_mib(64 * 1024);
    hb.set_disk_total_mib(100 * 1024);
    hb.set_disk_available_mib(50 * 1024);
    hb.add_images("ppn-test-guest");
    auto* vm = hb.add_vms();
    *vm = s.agents.Instances("laptop-a")[0];
    vm->mutable_network()->set_tx_bytes(tx_bytes);
    s.core.OnHeartbeat(hb);
  };
  beat(100);
  grpc::ClientContext watch_ctx;
  AsTenant(&watch_ctx, "acme");
  WatchVmRequest req;
  req.set_vm_id(id);
  auto stream = proxy->WatchVm(&watch_ctx, req);
  WatchVmResponse msg;
  REQUIRE(stream->Read(&msg));
  CHECK(msg.vm().network().tx_bytes() == 100);
  for (uint64_t tx : {200, 300, 400}) beat(tx);
  {
    grpc::ClientContext ctx;
    AsTenant(&ctx, "acme");
    v1::UpdateVmNetworkRequest update;
    update.set_vm_id(id);
    update.mutable_egress()->set_rate_limit_kbit(10);
    v1::UpdateVmNetworkResponse resp;
    REQUIRE(proxy->UpdateVmNetwork(&ctx, update, &resp).ok());
  }
  REQUIRE(stream->Read(&msg));  // the next message is the policy change, not a counter tick
  CHECK(msg.vm().spec().egress().rate_limit_kbit() == 10);
  CHECK(msg.vm().network().tx_bytes() == 400);
  watch_ctx.TryCancel();
  while (stream->Read(&msg)) {
  }
  stream->Finish();
}

TEST_CASE("the relay follows the route table over the wire and nobody else may read it", "[fleet][relay][watch]") {
  FleetCore::Options options{absl::Seconds(10)};
  options.relay_address = "127.0.0.1";
  options.relay_first_port = 30000;
  options.relay_last_port = 30009;
  Stack s(options);
  s.core.AddNode("laptop-b", "unused:2");
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id("laptop-b");
  hb.set_available_memory_mib(1024);
  s.core.OnHeartbeat(hb);
  auto relay = s.Stub("relay");
  grpc::ClientContext ctx;
  auto stream = relay->WatchRelayRoutes(&ctx, v1::WatchRelayRoutesRequest());
  v1::WatchRelayRoutesResponse table;
  REQUIRE(stream->Read(&table));  // the table now: empty
  CHECK(table.routes_size() == 0);
  CHECK(table.public_address() == "127.0.0.1");

  CreateVmRequest req = Create("web");
  req.mutable_spec()->add_port_forwards()->set_guest_port(80);
  CreateVmResponse created;
  {
    grpc::ClientContext c;
    AsTenant(&c, "acme");
    REQUIRE(s.Stub("tenant-proxy")->CreateVm(&c, req, &created).ok());
  }
  CHECK(created.vm().forwarded_ports(0).public_port() == 30000);
  // Creating writes the record twice (PENDING, then RUNNING): read until the backend shows.
  do {
    REQUIRE(stream->Read(&table));
  } while (table.routes_size() == 0 || table.routes(0).backend_port() == 0);
  CHECK(table.routes(0).public_port() == 30000);
  CHECK(table.routes(0).vm_id() == created.vm().vm_id());
  CHECK(table.routes(0).backend_port() == created.vm().forwarded_ports(0).host_port());

  // A migration's record reaches the relay at once.
  v1::RecordMigrationRequest moved;
  moved.set_vm_id(created.vm().vm_id());
  moved.set_source_node_id("laptop-a");
  moved.set_target_node_id("laptop-b");
  auto* port = moved.add_forwarded_ports();
  port->set_guest_port(80);
  port->set_host_address("127.0.0.2");
  port->set_host_port(21000);
  {
    grpc::ClientContext c;
    v1::RecordMigrationResponse r;
    REQUIRE(s.Stub("scheduler")->RecordMigration(&c, moved, &r).ok());
  }
  absl::Time recorded = absl::Now();
  REQUIRE(stream->Read(&table));
  CHECK(absl::Now() - recorded < absl::Milliseconds(100));
  REQUIRE(table.routes_size() == 1);
  CHECK(table.routes(0).backend_address() == "127.0.0.2");
  CHECK(table.routes(0).backend_port() == 21000);
  CHECK(table.routes(0).public_port() == 30000);

  for (const char* role : {"tenant-proxy", "scheduler", "host"}) {
    grpc::ClientContext c;
    AsTenant(&c, "acme");
    auto denied = s.Stub(role)->WatchRelayRoutes(&c, v1::WatchRelayRoutesRequest());
    v1::WatchRelayRoutesResponse none;
    CHECK_FALSE(denied->Read(&none));
    CHECK(denied->Finish().error_code() == grpc::StatusCode::PERMISSION_DENIED);
  }
  ctx.TryCancel();
  while (stream->Read(&table)) {
  }
}

TEST_CASE("a fleet without a relay ends WatchRelayRoutes with FAILED_PRECONDITION", "[fleet][relay][watch]") {
  Stack s;
  grpc::ClientContext ctx;
  auto stream = s.Stub("relay")->WatchRelayRoutes(&ctx, v1::WatchRelayRoutesRequest());
  v1::WatchRelayRoutesResponse table;
  CHECK_FALSE(stream->Read(&table));
  grpc::Status status = stream->Finish();
  CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(status.error_message() == "the fleet has no relay (--relay_address unset)");
}

}  // namespace
}  // namespace ppn::fleet
