// fleet: node registry, VM registry and placement. Flags → FleetCore → heartbeat watcher →
// server → SIGTERM → shutdown.

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/grpc_ledger_appender.h"
#include "common/ledger_outbox.h"
#include "common/metrics.h"
#include "common/random.h"
#include "common/revocation_follower.h"
#include "common/service_flags.h"
#include "fleet/fleet_metrics.h"
#include "fleet/fleet_server.h"
#include "fleet/grpc_agent_client.h"
#include "fleet/heartbeat_watcher.h"
#include "fleet/ledger_node_watcher.h"
#include "fleet/private_networks.h"
#include "fleet/relay_ports.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, db, "fleet.db", "SQLite file of the VM registry");
ABSL_FLAG(std::vector<std::string>, nodes, {}, "Nodes from configuration: node_id=host:port,...");
ABSL_FLAG(std::string, ledger, "",
          "The ledger's address: node.join entries add nodes, and the fleet appends its vm.* lifecycle entries "
          "(spooled in <db>.ledger-spool until delivered). Empty: --nodes only, no lifecycle entries");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(10), "Heartbeat interval asked of every agent");
ABSL_FLAG(std::string, relay_address, "",
          "The relay's address as tenants reach it (the founding node's public address or name). Every forwarded "
          "port of every VM gets a stable port of --relay_ports there, and tenants see only those. Empty: no relay");
ABSL_FLAG(std::string, private_network_pool, "10.214.0.0/16",
          "Tenants' private networks get one /24 each of this IPv4 range (prefix 8-24); guests never reach it "
          "through their egress, only over their NICs on a network");
ABSL_FLAG(std::string, relay_ports, "", "The relay's ports for tenant endpoints, FIRST-LAST (with --relay_address)");

namespace {

// A host name or an IP address (v4 or v6), as tenants are told it.
bool IsAddress(const std::string& a) {
  if (a.empty() || a.size() > 253) return false;
  for (char c : a) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '-' && c != ':') return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("fleet", argc, argv);
  absl::StatusOr<std::unique_ptr<ppn::fleet::VmStore>> store = ppn::fleet::VmStore::Open(absl::GetFlag(FLAGS_db));
  if (!store.ok()) ppn::ExitWithError(store.status().message());
  ppn::fleet::GrpcAgentClientFactory agents(flags.tls);
  std::unique_ptr<ppn::LedgerOutbox> outbox;
  if (!absl::GetFlag(FLAGS_ledger).empty()) {
    absl::StatusOr<std::unique_ptr<ppn::LedgerOutbox>> opened =
        ppn::LedgerOutbox::Open(absl::GetFlag(FLAGS_db) + ".ledger-spool", "fleet",
                                ppn::GrpcLedgerAppender(absl::GetFlag(FLAGS_ledger), flags.tls));
    if (!opened.ok()) ppn::ExitWithError(opened.status().message());
    outbox = *std::move(opened);
    outbox->StartDelivery(absl::Seconds(2));
  }
  ppn::fleet::FleetCore::Options options;
  options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.relay_address = absl::GetFlag(FLAGS_relay_address);
  if (!options.relay_address.empty() || !absl::GetFlag(FLAGS_relay_ports).empty()) {
    if (!IsAddress(options.relay_address)) {
      ppn::ExitWithError("--relay_address must be a host name or IP address, given with --relay_ports");
    }
    absl::StatusOr<std::pair<uint32_t, uint32_t>> range = ppn::fleet::ParsePortRange(absl::GetFlag(FLAGS_relay_ports));
    if (!range.ok()) ppn::ExitWithError(absl::StrCat("--relay_ports: ", range.status().message()));
    options.relay_first_port = range->first;
    options.relay_last_port = range->second;
  }
  options.private_network_pool = absl::GetFlag(FLAGS_private_network_pool);
  if (absl::Status pool = ppn::fleet::NetworkPool::Make(options.private_network_pool).status(); !pool.ok()) {
    ppn::ExitWithError(pool.message());
  }
  ppn::fleet::FleetCore core({store->get(), &agents, ppn::RealClock::Get(), ppn::OpenSslRandom::Get(), outbox.get()},
                             options);
  absl::Status loaded = core.Load();
  if (!loaded.ok()) ppn::ExitWithError(loaded.message());
  for (const std::string& node : absl::GetFlag(FLAGS_nodes)) {
    std::vector<std::string> kv = absl::StrSplit(node, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty() || kv[1].empty())
      ppn::ExitWithError("--nodes entries must be node_id=host:port");
    core.AddNode(kv[0], kv[1]);
  }
  std::unique_ptr<ppn::fleet::LedgerNodeWatcher> members;
  if (!absl::GetFlag(FLAGS_ledger).empty()) {
    members = std::make_unique<ppn::fleet::LedgerNodeWatcher>(&core, absl::GetFlag(FLAGS_ledger), flags.tls);
    members->Start();
  }
  absl::StatusOr<ppn::Revocations> revocations = ppn::OpenRevocations(
      absl::GetFlag(FLAGS_db) + ".revoked.json", flags.mesh, absl::GetFlag(FLAGS_ledger), flags.tls);
  if (!revocations.ok()) ppn::ExitWithError(revocations.status().message());
  ppn::fleet::HeartbeatWatcher watcher(&core, &agents, options.heartbeat_interval);
  watcher.Start();
  ppn::fleet::RegisterFleetMetrics(&core, &ppn::metrics::Default());
  ppn::fleet::FleetService service(&core);
  absl::StatusOr<ppn::StartedServer> server =
      ppn::fleet::StartFleetServer(flags.mesh, flags.listen, flags.tls, &service, revocations->list.get());
  if (!server.ok()) ppn::ExitWithError(server.status().message());
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) ppn::ExitWithError(port.message());
  spdlog::info("fleet.started port={} nodes={} relay={}", server->port, core.NodeAddresses().size(),
               options.relay_address.empty()
                   ? "none"
                   : absl::StrCat(options.relay_address, ":", absl::GetFlag(FLAGS_relay_ports)));
  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("fleet.stopping signal={}", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  watcher.Stop();
  if (members) members->Stop();
  return 0;
}
