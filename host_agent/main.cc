// host_agent: the QEMU processes of one node. Flags → VmManager → server → SIGTERM → shutdown.
// VMs keep running when the agent stops; the next start re-adopts them.

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/process.h"
#include "common/service_flags.h"
#include "host_agent/host_agent_server.h"
#include "host_agent/vm_manager.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, node_id, "node", "This node's id (e.g. laptop-a)");
ABSL_FLAG(std::string, state_dir, "host-agent", "Directory for VM disks, seeds, sockets and agent.db");
ABSL_FLAG(std::string, catalog, "", "Image catalog JSON (tools/build-test-guest writes one)");
ABSL_FLAG(std::string, mesh_address, "127.0.0.1", "Address forwarded ports and migrations listen on");
ABSL_FLAG(std::string, port_range, "20000-20999", "Host ports for forwards and migrations");
ABSL_FLAG(uint64_t, advertised_memory_mib, 0, "Memory to offer (simulation); 0 = the machine's");
ABSL_FLAG(uint64_t, safety_margin_mib, 512, "Memory always kept free for the host");
ABSL_FLAG(uint64_t, advertised_disk_mib, 0, "Disk to offer for VM overlays (simulation); 0 = the state dir's");
ABSL_FLAG(std::string, kvm, "auto", "auto (functional probe), off, or simulate (advertise KVM, run TCG)");
ABSL_FLAG(std::string, kvm_probe_image, "ppn-test-guest", "Catalog image the KVM probe boots");
ABSL_FLAG(absl::Duration, kvm_probe_timeout, absl::Seconds(10), "How long the KVM probe guest may take");
ABSL_FLAG(std::string, qemu_binary, "qemu-system-x86_64", "QEMU to run");
ABSL_FLAG(std::string, qemu_user, "nobody", "User QEMU drops to when the agent runs as root");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(10), "Default heartbeat interval");
ABSL_FLAG(std::string, network, "namespace",
          "namespace: each VM in a network namespace of its own, reaching only what its egress policy allows "
          "(needs root); user: QEMU's user-mode networking in the node's own namespace, where guests can reach "
          "the node (every heartbeat then warns)");
ABSL_FLAG(std::vector<std::string>, lan_ranges, {},
          "Extra CIDRs guests must never reach (the node's connected subnets are always included)");
ABSL_FLAG(bool, remove_network, false,
          "Remove every VM network namespace, link and nftables rule this agent made on the node, then exit "
          "(tools that stop a whole node, after its guests; a running VM would lose its network)");
ABSL_FLAG(absl::Duration, test_hold_after_exec, absl::ZeroDuration(),
          "Testing only: pause each spawn this long after QEMU's exec (crash tests)");

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("host_agent", argc, argv);
  ppn::host::VmManager::Options options;
  options.node_id = absl::GetFlag(FLAGS_node_id);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.host_address = absl::GetFlag(FLAGS_mesh_address);
  std::vector<std::string> range = absl::StrSplit(absl::GetFlag(FLAGS_port_range), '-');
  if (range.size() != 2 || !absl::SimpleAtoi(range[0], &options.port_first) ||
      !absl::SimpleAtoi(range[1], &options.port_last) || options.port_first == 0 ||
      options.port_first > options.port_last || options.port_last > 65535) {
    ppn::ExitWithError("--port_range must be FIRST-LAST within 1-65535");
  }
  options.advertised_memory_mib = absl::GetFlag(FLAGS_advertised_memory_mib);
  options.safety_margin_mib = absl::GetFlag(FLAGS_safety_margin_mib);
  options.advertised_disk_mib = absl::GetFlag(FLAGS_advertised_disk_mib);
  options.hold_after_exec_for_test = absl::GetFlag(FLAGS_test_hold_after_exec);
  std::string kvm = absl::GetFlag(FLAGS_kvm);
  if (kvm == "auto") {
    options.kvm_mode = ppn::host::KvmMode::kAuto;
  } else if (kvm == "off") {
    options.kvm_mode = ppn::host::KvmMode::kOff;
  } else if (kvm == "simulate") {
    options.kvm_mode = ppn::host::KvmMode::kSimulate;
  } else {
    ppn::ExitWithError("--kvm must be auto, off or simulate");
  }
  options.kvm_probe_image = absl::GetFlag(FLAGS_kvm_probe_image);
  options.kvm_probe_timeout = absl::GetFlag(FLAGS_kvm_probe_timeout);
  options.qemu_binary = absl::GetFlag(FLAGS_qemu_binary);
  options.qemu_user = absl::GetFlag(FLAGS_qemu_user);
  if (absl::GetFlag(FLAGS_catalog).empty())
    ppn::ExitWithError("--catalog is required (tools/build-test-guest makes one)");
  absl::StatusOr<ppn::host::ImageCatalog> catalog = ppn::host::ImageCatalog::Load(absl::GetFlag(FLAGS_catalog));
  if (!catalog.ok()) ppn::ExitWithError(catalog.status().message());
  std::filesystem::create_directories(options.state_dir);
  absl::StatusOr<std::unique_ptr<ppn::host::VmStore>> store = ppn::host::VmStore::Open(options.state_dir + "/agent.db");
  if (!store.ok()) ppn::ExitWithError(store.status().message());

  if (absl::GetFlag(FLAGS_remove_network)) {
    ppn::host::RemoveNetworkScope(ppn::host::NetworkScope(options.node_id, options.state_dir),
                                  ppn::SpawnerCommandRunner(ppn::PosixProcessSpawner::Get()));
    spdlog::info("host_agent.network_removed node={}", options.node_id);
    return 0;
  }
  // QEMU authenticates and encrypts migration streams with the node's own identity.
  options.migration_tls = {flags.tls.ca_cert, flags.tls.cert, flags.tls.key};
  std::unique_ptr<ppn::host::VmNetwork> network;
  std::string mode = absl::GetFlag(FLAGS_network);
  if (mode == "namespace") {
    if (geteuid() != 0) {
      ppn::ExitWithError(
          "per-VM network namespaces need root: run the agent as root, or pass --network=user to let guests share "
          "the node's own network (they can then reach its services; every heartbeat will say so)");
    }
    ppn::CommandRunner run = ppn::SpawnerCommandRunner(ppn::PosixProcessSpawner::Get());
    absl::StatusOr<ppn::host::NetworkOptions> net =
        ppn::host::DiscoverNetworkOptions(options.node_id, options.host_address, absl::GetFlag(FLAGS_lan_ranges), run);
    if (!net.ok()) ppn::ExitWithError(net.status().message());
    net->scope = ppn::host::NetworkScope(options.node_id, options.state_dir);
    network = std::make_unique<ppn::host::VmNetwork>(*std::move(net), run);
  } else if (mode == "user") {
    spdlog::warn("node.no_network_isolation: --network=user, guests share the node's network namespace");
  } else {
    ppn::ExitWithError("--network must be namespace or user");
  }
  ppn::host::VmManager manager(options, *std::move(catalog),
                               {store->get(), ppn::RealClock::Get(), ppn::PosixProcessSpawner::Get(), network.get()});
  absl::Status started = manager.Start();
  if (!started.ok()) ppn::ExitWithError(started.message());
  ppn::host::HostAgentService service(&manager, absl::GetFlag(FLAGS_heartbeat_interval));
  absl::StatusOr<ppn::StartedServer> server =
      ppn::host::StartHostAgentServer(flags.mesh, flags.listen, flags.tls, &service);
  if (!server.ok()) ppn::ExitWithError(server.status().message());
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) ppn::ExitWithError(port.message());
  spdlog::info("host_agent.started node={} port={} vms={}", options.node_id, server->port, manager.List().size());

  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("host_agent.stopping signal={} (VMs keep running)", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
