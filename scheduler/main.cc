// scheduler: live migration, drain, rebalance and pins. Flags → peers (fleet, host agents,
// the ledger through a durable outbox) → migrator → core → server → SIGTERM → shutdown.

#include <filesystem>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/grpc_ledger_appender.h"
#include "common/ledger_outbox.h"
#include "common/revocation_follower.h"
#include "common/service_flags.h"
#include "scheduler/grpc_peers.h"
#include "scheduler/migrator.h"
#include "scheduler/scheduler_core.h"
#include "scheduler/scheduler_server.h"
#include "scheduler/scheduler_service.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, fleet, "127.0.0.1:7102", "The fleet's address");
ABSL_FLAG(std::string, ledger, "127.0.0.1:7101", "The ledger's address");
ABSL_FLAG(std::string, state_dir, "scheduler", "Directory for the ledger spool (spool.db)");

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("scheduler", argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_state_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) ppn::ExitWithError("cannot create --state_dir " + dir + ": " + ec.message());
  absl::StatusOr<std::unique_ptr<ppn::LedgerOutbox>> outbox = ppn::LedgerOutbox::Open(
      dir + "/spool.db", "scheduler", ppn::GrpcLedgerAppender(absl::GetFlag(FLAGS_ledger), flags.tls));
  if (!outbox.ok()) ppn::ExitWithError(outbox.status().message());
  (*outbox)->StartDelivery(absl::Milliseconds(500));

  ppn::scheduler::GrpcFleetPeer fleet(absl::GetFlag(FLAGS_fleet), flags.tls);
  ppn::scheduler::GrpcAgentPeers agents(flags.tls);
  ppn::scheduler::OutboxLedgerPeer ledger(outbox->get());
  ppn::scheduler::Migrator migrator(
      {&fleet, &agents, &ledger, ppn::RealClock::Get(), [](absl::Duration d) { absl::SleepFor(d); }},
      ppn::scheduler::Migrator::Options{});
  ppn::scheduler::SchedulerCore core(&fleet, &ledger, &migrator);
  ppn::scheduler::SchedulerService service(&core);
  absl::StatusOr<ppn::Revocations> revocations =
      ppn::OpenRevocations(dir + "/revoked.json", flags.mesh, absl::GetFlag(FLAGS_ledger), flags.tls);
  if (!revocations.ok()) ppn::ExitWithError(revocations.status().message());
  absl::StatusOr<ppn::StartedServer> server =
      ppn::scheduler::StartSchedulerServer(flags.mesh, flags.listen, flags.tls, &service, revocations->list.get());
  if (!server.ok()) ppn::ExitWithError(server.status().message());
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) ppn::ExitWithError(port.message());
  spdlog::info("scheduler.started port={} spooled={}", server->port, (*outbox)->Pending());
  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("scheduler.stopping signal={}", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
