// scheduler: live migration, drain, rebalance and pins. Stateless.

#include <cstdio>

#include "absl/flags/flag.h"
#include "common/grpc_server.h"
#include "common/roles.h"
#include "common/service_flags.h"
#include "scheduler/scheduler_service.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, fleet, "127.0.0.1:7102", "The fleet's address");
ABSL_FLAG(std::string, ledger, "127.0.0.1:7101", "The ledger's address");

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("scheduler", argc, argv);
  ppn::scheduler::SchedulerServiceImpl service(absl::GetFlag(FLAGS_fleet), absl::GetFlag(FLAGS_ledger), flags.tls);
  ppn::RolePolicy policy(flags.mesh);
  policy.AllowService("ppn.scheduler.v1.Scheduler", {ppn::roles::kOperator});
  absl::StatusOr<ppn::StartedServer> server =
      ppn::StartMeshServer(flags.listen, flags.tls, std::move(policy), {&service});
  if (!server.ok()) {
    std::fprintf(stderr, "scheduler: %s\n", std::string(server.status().message()).c_str());
    return 2;
  }
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) {
    std::fprintf(stderr, "scheduler: %s\n", std::string(port.message()).c_str());
    return 2;
  }
  spdlog::info("scheduler.started port={}", server->port);
  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("scheduler.stopping signal={}", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
