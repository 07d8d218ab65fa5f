// tenant_proxy: the only external entry point. Flags → config → audit trail → fleet client → core →
// server.

#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/flags/flag.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/grpc_ledger_appender.h"
#include "common/metrics.h"
#include "common/random.h"
#include "common/revocation_follower.h"
#include "common/rpc_interceptors.h"
#include "common/service_flags.h"
#include "grpcpp/create_channel.h"
#include "spdlog/spdlog.h"
#include "tenant_proxy/grpc_fleet_client.h"
#include "tenant_proxy/tenant_admin.h"
#include "tenant_proxy/tenant_proxy_server.h"

ABSL_FLAG(std::string, config, "", "ProxyConfig in protobuf text format (tenants, token hashes, limits)");
ABSL_FLAG(std::string, fleet, "127.0.0.1:7102", "The fleet's address (mTLS)");
ABSL_FLAG(std::string, ledger, "127.0.0.1:7101", "The ledger's address (mTLS)");
ABSL_FLAG(std::string, state_dir, "tenant-proxy", "Directory for audit.jsonl and the ledger spool");
ABSL_FLAG(int, max_watch_streams, 32, "Concurrent WatchVm streams each tenant may hold");
ABSL_FLAG(std::string, admin_listen, "",
          "host:port of the operator's TenantAdmin listener (mTLS, operator role only; \"\": none). Changes are "
          "written to --config and apply without a restart");
ABSL_FLAG(std::string, admin_port_file, "", "Write the admin listener's bound port here (for port 0)");

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("tenant_proxy", argc, argv);
  if (absl::GetFlag(FLAGS_config).empty()) ppn::ExitWithError("--config is required");
  absl::StatusOr<ppn::tenancy::v1::ProxyConfig> config = ppn::proxy::LoadProxyConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) ppn::ExitWithError(config.status().message());
  if (absl::GetFlag(FLAGS_max_watch_streams) < 1) ppn::ExitWithError("--max_watch_streams must be at least 1");
  absl::StatusOr<ppn::proxy::TokenAuthenticator> auth = ppn::proxy::TokenAuthenticator::Create(*config);
  if (!auth.ok()) ppn::ExitWithError(auth.status().message());
  std::string dir = absl::GetFlag(FLAGS_state_dir);
  std::filesystem::create_directories(dir);
  absl::StatusOr<std::unique_ptr<ppn::proxy::AuditTrail>> audit =
      ppn::proxy::AuditTrail::Open(dir + "/audit.jsonl", dir + "/spool.db", ppn::RealClock::Get(),
                                   ppn::GrpcLedgerAppender(absl::GetFlag(FLAGS_ledger), flags.tls));
  if (!audit.ok()) ppn::ExitWithError(audit.status().message());
  (*audit)->StartDelivery(absl::Milliseconds(500));
  ppn::metrics::Default().AddCollector([trail = audit->get()](ppn::metrics::Snapshot& s) {
    s.Gauge("ppn_proxy_ledger_spool_pending", "Audit entries spooled, not yet in the ledger.", {},
            static_cast<double>(trail->Pending()));
  });

  auto stub = ppn::fleet::v1::FleetService::NewStub(
      ppn::MeshChannel(absl::GetFlag(FLAGS_fleet), ppn::MtlsChannelCredentials(flags.tls)));
  ppn::proxy::GrpcFleetClient fleet(stub.get());
  ppn::proxy::RateLimiter limiter(ppn::RealClock::Get());
  ppn::proxy::ProxyOptions options;
  options.max_watch_streams_per_tenant = absl::GetFlag(FLAGS_max_watch_streams);
  ppn::proxy::ProxyCore core(*config, {&fleet, &limiter, audit->get()}, options);
  ppn::proxy::TenantServiceImpl service(&*auth, &core);
  absl::StatusOr<ppn::StartedServer> server = ppn::proxy::StartTenantServer(flags.listen, flags.tls, &*auth, &service);
  if (!server.ok()) ppn::ExitWithError(server.status().message());
  // The operator's listener: a mesh server like any other, so a revoked identity is refused.
  ppn::proxy::TenantAdmin admin(absl::GetFlag(FLAGS_config), *config, &*auth, &core, ppn::OpenSslRandom::Get());
  ppn::proxy::TenantAdminService admin_service(&admin);
  absl::StatusOr<ppn::Revocations> revocations;
  std::optional<ppn::StartedServer> admin_server;
  if (!absl::GetFlag(FLAGS_admin_listen).empty()) {
    revocations = ppn::OpenRevocations(dir + "/revoked.json", flags.mesh, absl::GetFlag(FLAGS_ledger), flags.tls);
    if (!revocations.ok()) ppn::ExitWithError(revocations.status().message());
    absl::StatusOr<ppn::StartedServer> started = ppn::proxy::StartTenantAdminServer(
        flags.mesh, absl::GetFlag(FLAGS_admin_listen), flags.tls, &admin_service, revocations->list.get());
    if (!started.ok()) ppn::ExitWithError(started.status().message());
    admin_server = *std::move(started);
    if (!absl::GetFlag(FLAGS_admin_port_file).empty()) {
      absl::Status written =
          ppn::WriteFileAtomically(absl::GetFlag(FLAGS_admin_port_file), absl::StrCat(admin_server->port, "\n"), 0644);
      if (!written.ok()) ppn::ExitWithError(written.message());
    }
  }
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) ppn::ExitWithError(port.message());
  spdlog::info("tenant_proxy.started port={} tenants={} spooled={}", server->port, config->tenants_size(),
               (*audit)->Pending());
  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("tenant_proxy.stopping signal={}", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (admin_server.has_value())
    admin_server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
