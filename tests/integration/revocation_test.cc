// A node's certificate is refused by every service once the ledger holds its node.revoke, and
// still after a restart: the real ledger, fleet, scheduler and host agent binaries on 127.0.0.1.

#include <signal.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "common/tls_credentials.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using ppn::testing::AgentProcess;
using ppn::testing::StartAgent;
using ppn::testing::StartService;

grpc::Status Health(const TlsFiles& tls, int port) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), MtlsChannelCredentials(tls)));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckResponse resp;
  return stub->Check(&ctx, {}, &resp);
}

// Waits until `pred` holds (the followers read the ledger's stream a moment after the append).
template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout = absl::Seconds(30)) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return pred();
}

TEST_CASE("a revoked node's certificate is refused by every service and stays refused after a restart",
          "[revocation][integration]") {
  ppn::testing::GuestDir dir;
  ppn::testing::TestPki pki("ppn.test");
  AgentProcess ledger =
      StartService(pki, dir.path(), "ledger/ledger", "ledger", "ledger",
                   {"--db=" + dir.path() + "/ledger.db", "--signing_key=" + dir.path() + "/note.key"});
  const std::string ledger_flag = "--ledger=127.0.0.1:" + std::to_string(ledger.port);
  AgentProcess agent =
      StartAgent(pki, dir.path(), dir.catalog(), "laptop-a", {"--kvm=simulate", "--network=user", ledger_flag});
  auto start_fleet = [&](const std::string& ledger_at) {
    return StartService(pki, dir.path(), "fleet/fleet", "fleet", "fleet",
                        {"--db=" + dir.path() + "/fleet.db", "--ledger=" + ledger_at,
                         "--nodes=laptop-a=127.0.0.1:" + std::to_string(agent.port)});
  };
  AgentProcess fleet = start_fleet("127.0.0.1:" + std::to_string(ledger.port));
  AgentProcess scheduler = StartService(
      pki, dir.path(), "scheduler/scheduler", "scheduler", "scheduler",
      {"--fleet=127.0.0.1:" + std::to_string(fleet.port), ledger_flag, "--state_dir=" + dir.path() + "/scheduler"});

  // The founding node's pairing admin and the tenant proxy's operator listener are mesh servers too.
  { std::ofstream(dir.path() + "/ca.key") << pki.ca().key_pem; }
  AgentProcess pairing = StartService(pki, dir.path(), "pairing/pairing_admin", "pairing-admin", "admin",
                                      {"--ca_cert=" + pki.ca_cert_path(), "--ca_key=" + dir.path() + "/ca.key",
                                       ledger_flag, "--peers_db=" + dir.path() + "/peers.db"});
  std::ofstream(dir.path() + "/tenants.textproto") << "";
  const std::string admin_port_file = dir.path() + "/admin.port";
  AgentProcess proxy =
      StartService(pki, dir.path(), "tenant_proxy/tenant_proxy", "tenant-proxy", "proxy",
                   {"--config=" + dir.path() + "/tenants.textproto", "--fleet=127.0.0.1:" + std::to_string(fleet.port),
                    ledger_flag, "--state_dir=" + dir.path() + "/proxy-state", "--admin_listen=127.0.0.1:0",
                    "--admin_port_file=" + admin_port_file});
  int tenant_admin_port = 0;
  REQUIRE(absl::SimpleAtoi(absl::StripAsciiWhitespace(*ReadFile(admin_port_file)), &tenant_admin_port));

  TlsFiles stolen = pki.Issue("host", "laptop-b");
  TlsFiles honest = pki.Issue("host", "laptop-c");
  std::map<std::string, int*> services = {{"ledger", &ledger.port},         {"fleet", &fleet.port},
                                          {"scheduler", &scheduler.port},   {"host agent", &agent.port},
                                          {"pairing admin", &pairing.port}, {"tenant admin", &tenant_admin_port}};
  for (const auto& [name, port] : services) {
    INFO(name);
    REQUIRE(Health(stolen, *port).ok());
  }

  // What `ppnctl node revoke laptop-b` makes the pairing admin append.
  auto ledger_stub = ppn::ledger::v1::Ledger::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(ledger.port), MtlsChannelCredentials(pki.Issue("pairing-admin", "admin"))));
  ppn::ledger::v1::AppendRequest revoke;
  revoke.set_kind("node.revoke");
  revoke.set_subject("laptop-b");
  revoke.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  (*revoke.mutable_attributes())["spiffe_id"] = "spiffe://ppn.test/host/laptop-b";
  (*revoke.mutable_attributes())["reason"] = "laptop stolen";
  ppn::ledger::v1::AppendResponse appended;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    REQUIRE(ledger_stub->Append(&ctx, revoke, &appended).ok());
  }

  for (const auto& [name, port] : services) {
    INFO(name);
    CHECK(WaitFor([&] { return Health(stolen, *port).error_code() == grpc::StatusCode::UNAUTHENTICATED; }));
    grpc::Status refused = Health(stolen, *port);
    CHECK(refused.error_message() == "certificate of spiffe://ppn.test/host/laptop-b was revoked (ledger entry " +
                                         std::to_string(appended.index()) + ", node.revoke)");
    CHECK(Health(honest, *port).ok());
  }
  // Not only health: the fleet's own methods too.
  {
    auto fleet_stub = ppn::fleet::v1::FleetService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(fleet.port), MtlsChannelCredentials(stolen)));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ppn::fleet::v1::ListNodesResponse nodes;
    CHECK(fleet_stub->ListNodes(&ctx, {}, &nodes).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }

  // The fleet restarts while the ledger is out of reach: its persisted list still refuses.
  fleet.process->Signal(SIGTERM);
  REQUIRE(fleet.process->Wait(absl::Seconds(20)) >= 0);
  fleet = start_fleet("127.0.0.1:1");
  grpc::Status after_restart = Health(stolen, fleet.port);
  CHECK(after_restart.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(Health(honest, fleet.port).ok());
}

}  // namespace
}  // namespace ppn
