// host_agent: the QEMU processes of one node. Flags → (WireGuard) → VmManager → server → SIGTERM
// → shutdown. VMs and the WireGuard interface keep running when the agent stops; the next start
// re-adopts them.

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/process.h"
#include "common/revocation_follower.h"
#include "common/rpc_interceptors.h"
#include "common/service_flags.h"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"
#include "host_agent/host_agent_server.h"
#include "host_agent/mesh_runner.h"
#include "host_agent/vm_manager.h"
#include "ledger/grpc_ledger_source.h"
#include "ledger/mirror.h"
#include "mesh/addresses.h"
#include "mesh/grpc_membership_source.h"
#include "mesh/wireguard_device.h"
#include "mesh/wireguard_key.h"
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
ABSL_FLAG(std::string, templates, "auto",
          "Creates restore per-image templates (docs/templates.md): auto (each made on first use), off (every "
          "create boots), or a comma list made at start as well: all, IMAGE, IMAGE@VCPUSxMIB");
ABSL_FLAG(absl::Duration, boot_timeout, absl::Minutes(5),
          "A booted VM whose guest gives no sign of being ready (docs/guest-channel.md) is RUNNING after this");
ABSL_FLAG(absl::Duration, balloon_interval, absl::ZeroDuration(),
          "How often the balloon controller reads guests' memory and sets their balloons, e.g. 500ms; 0 = off "
          "(the default until a killed QEMU is always noticed while the controller runs)");
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
ABSL_FLAG(bool, wireguard, false,
          "Run the node's WireGuard interface (mesh address from --mesh_address, peers from the ledger): every "
          "node of a mesh of several machines does; the one-machine mesh on loopback does not");
ABSL_FLAG(std::string, mesh_grant, "",
          "The node's grant: node.json in the pairing out dir (its key file, the keys the ceremony vouched for, "
          "the founding node). Empty on the founding node");
ABSL_FLAG(std::string, wireguard_key_file, "",
          "WireGuard private key (0600); default: the grant's. The founding node's is shared with pairing_admin "
          "(made here if missing)");
ABSL_FLAG(std::string, ledger, "", "The ledger's address (inside the mesh), where node.join and node.revoke are read");
ABSL_FLAG(std::string, ledger_mirror, "",
          "Keep a verified copy of the ledger in this file (a ledger file `ppn restore-ledger` can put back on a "
          "founding node); needs --ledger. Empty: no mirror");
ABSL_FLAG(std::string, ledger_mirror_key, "",
          "The ledger's note verifier key for the mirror; empty: the first checkpoint's, pinned from then on");
ABSL_FLAG(std::string, mesh_hub, "", "The node that routes between nodes that cannot reach each other directly");
ABSL_FLAG(std::string, wireguard_interface, "ppn-wg", "Name of the WireGuard interface");
ABSL_FLAG(uint32_t, wireguard_port, 51820, "UDP port WireGuard listens on");
ABSL_FLAG(std::string, wireguard_backend, "auto", "auto (the kernel's when it works), kernel, or wireguard-go");
ABSL_FLAG(absl::Duration, test_hold_after_exec, absl::ZeroDuration(),
          "Testing only: pause each spawn this long after QEMU's exec (crash tests)");

namespace {

// Below the kernel's route for the interface (metric 0), so it only counts while that is gone.
constexpr char kGuardRouteMetric[] = "4242";

// "10.8.0.0/24" for 10.8.0.2 and 24.
std::string MeshPrefix(const std::string& address, int prefix_length) {
  std::optional<uint32_t> a = ppn::mesh::ParseIpv4(address);
  uint32_t mask = prefix_length == 0 ? 0 : ~uint32_t{0} << (32 - prefix_length);
  return absl::StrCat(ppn::mesh::FormatIpv4(a.value_or(0) & mask), "/", prefix_length);
}

struct Mesh {
  std::unique_ptr<ppn::mesh::WireGuardDevice> device;
  std::unique_ptr<ppn::mesh::GrpcMembershipSource> members;
  std::unique_ptr<ppn::host::MeshRunner> runner;
};

// The node's tunnel, up before anything serves on the mesh address; exits with the reason when
// it cannot come up.
Mesh StartMesh(const ppn::ServiceFlags& flags, const std::string& node_id, const std::string& mesh_address) {
  Mesh m;
  if (!ppn::mesh::ParseIpv4(mesh_address).has_value()) {
    ppn::ExitWithError("--wireguard needs --mesh_address to be this node's IPv4 mesh address, e.g. 10.8.0.2");
  }
  std::optional<ppn::host::MeshGrant> grant;
  if (!absl::GetFlag(FLAGS_mesh_grant).empty()) {
    absl::StatusOr<ppn::host::MeshGrant> loaded = ppn::host::LoadMeshGrant(absl::GetFlag(FLAGS_mesh_grant));
    if (!loaded.ok()) ppn::ExitWithError(loaded.status().message());
    grant = *std::move(loaded);
  }
  std::string key_file = absl::GetFlag(FLAGS_wireguard_key_file);
  if (key_file.empty() && grant.has_value()) key_file = grant->key_file;
  if (key_file.empty()) {
    ppn::ExitWithError(
        "--wireguard needs --mesh_grant (a node that joined) or --wireguard_key_file (the founding node's, "
        "shared with pairing_admin)");
  }
  if (absl::GetFlag(FLAGS_ledger).empty()) {
    ppn::ExitWithError("--wireguard needs --ledger: the node's peers are the ledger's node.join entries");
  }
  // A node that joined has the key the ceremony vouched for; only the founding node makes its own.
  absl::StatusOr<ppn::mesh::WireGuardKeyPair> key =
      grant.has_value() ? ppn::mesh::ReadPrivateKeyFile(key_file) : ppn::mesh::LoadOrCreatePrivateKeyFile(key_file);
  if (!key.ok()) ppn::ExitWithError(key.status().message());
  std::fill(key->private_key.begin(), key->private_key.end(), '\0');
  ppn::mesh::WireGuardDeviceOptions device;
  device.interface_name = absl::GetFlag(FLAGS_wireguard_interface);
  device.private_key_file = key_file;
  if (absl::GetFlag(FLAGS_wireguard_port) == 0 || absl::GetFlag(FLAGS_wireguard_port) > 65535) {
    ppn::ExitWithError("--wireguard_port must be 1-65535");
  }
  device.listen_port = static_cast<uint16_t>(absl::GetFlag(FLAGS_wireguard_port));
  device.address = mesh_address;
  if (grant.has_value()) device.prefix_length = grant->prefix_length;
  std::string backend = absl::GetFlag(FLAGS_wireguard_backend);
  if (backend == "auto") {
    device.backend = ppn::mesh::Backend::kAuto;
  } else if (backend == "kernel") {
    device.backend = ppn::mesh::Backend::kKernel;
  } else if (backend == "wireguard-go") {
    device.backend = ppn::mesh::Backend::kUserspace;
  } else {
    ppn::ExitWithError("--wireguard_backend must be auto, kernel or wireguard-go");
  }
  ppn::CommandRunner run = ppn::SpawnerCommandRunner(ppn::PosixProcessSpawner::Get());
  // While the interface is missing (before it comes up, after it vanished) the mesh has no
  // route, and a connection to a mesh address would leave through the default route in clear,
  // from the node's LAN address. An unreachable route under the interface's makes it fail
  // instead.
  const std::string prefix = MeshPrefix(mesh_address, device.prefix_length);
  absl::StatusOr<std::string> guard =
      run({"ip", "route", "replace", "unreachable", prefix, "metric", kGuardRouteMetric}, "");
  if (!guard.ok()) {
    ppn::ExitWithError(
        absl::StrCat("cannot add the guard route for the mesh (", prefix, "): ", guard.status().message()));
  }
  absl::StatusOr<std::unique_ptr<ppn::mesh::WireGuardDevice>> created = ppn::mesh::WireGuardDevice::Create(device, run);
  if (!created.ok()) ppn::ExitWithError(created.status().message());
  m.device = *std::move(created);
  // The ledger is unreachable while the founding node restarts: reconnect within seconds when
  // it is back, not after gRPC's default backoff of up to two minutes.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  m.members = std::make_unique<ppn::mesh::GrpcMembershipSource>(
      ppn::MeshChannel(absl::GetFlag(FLAGS_ledger), ppn::MtlsChannelCredentials(flags.tls), args));
  ppn::host::MeshRunnerOptions options;
  options.node_id = node_id;
  options.mesh_address = mesh_address;
  options.public_key = key->public_key;
  options.grant = std::move(grant);
  options.hub = absl::GetFlag(FLAGS_mesh_hub);
  absl::StatusOr<std::unique_ptr<ppn::host::MeshRunner>> runner =
      ppn::host::MeshRunner::Create(std::move(options), m.device.get(), m.members.get(), ppn::RealClock::Get());
  if (!runner.ok()) ppn::ExitWithError(runner.status().message());
  m.runner = *std::move(runner);
  absl::Status started = m.runner->Start();
  if (!started.ok()) ppn::ExitWithError(started.message());
  // Only now: the first connection to the ledger goes through the tunnel, from the mesh address.
  m.members->Start();
  spdlog::info("mesh.started interface={} address={} ledger={} hub={}", device.interface_name, mesh_address,
               absl::GetFlag(FLAGS_ledger), absl::GetFlag(FLAGS_mesh_hub));
  return m;
}

bool IsLoopback(const std::string& address) { return address.rfind("127.", 0) == 0 || address == "::1"; }

}  // namespace

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
  options.balloon_interval = absl::GetFlag(FLAGS_balloon_interval);
  if (options.balloon_interval < absl::ZeroDuration()) ppn::ExitWithError("--balloon_interval must not be negative");
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
  options.boot_timeout = absl::GetFlag(FLAGS_boot_timeout);
  if (options.boot_timeout <= absl::ZeroDuration()) ppn::ExitWithError("--boot_timeout must be positive");
  if (std::string t = absl::GetFlag(FLAGS_templates); t == "off") {
    options.templates = false;
  } else if (t != "auto") {
    options.template_images = absl::StrSplit(t, ',', absl::SkipEmpty());
  }
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
  // The tunnel first: the agent's listeners, forwards and migrations are on its mesh address.
  Mesh mesh;
  if (absl::GetFlag(FLAGS_wireguard)) {
    mesh = StartMesh(flags, options.node_id, options.host_address);
  } else if (!IsLoopback(options.host_address)) {
    spdlog::warn(
        "mesh.no_tunnel mesh_address={}: without --wireguard, traffic to and from other nodes is not "
        "tunnelled",
        options.host_address);
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
  ppn::host::VmManager::Deps deps{store->get(), ppn::RealClock::Get(), ppn::PosixProcessSpawner::Get(), network.get()};
  const bool tunnelled = mesh.runner != nullptr, off_loopback = !IsLoopback(options.host_address);
  // The ledger mirror: a verified copy of every audit record on this node too.
  std::unique_ptr<ppn::ledger::GrpcLedgerSource> mirror_source;
  std::unique_ptr<ppn::ledger::LedgerMirror> mirror;
  if (!absl::GetFlag(FLAGS_ledger_mirror).empty()) {
    if (absl::GetFlag(FLAGS_ledger).empty()) ppn::ExitWithError("--ledger_mirror needs --ledger");
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
    mirror_source = std::make_unique<ppn::ledger::GrpcLedgerSource>(
        ppn::MeshChannel(absl::GetFlag(FLAGS_ledger), ppn::MtlsChannelCredentials(flags.tls), args));
    ppn::ledger::LedgerMirror::Options mirror_options;
    mirror_options.verifier_key = absl::GetFlag(FLAGS_ledger_mirror_key);
    absl::StatusOr<std::unique_ptr<ppn::ledger::LedgerMirror>> opened = ppn::ledger::LedgerMirror::Open(
        absl::GetFlag(FLAGS_ledger_mirror), mirror_source.get(), std::move(mirror_options));
    if (!opened.ok()) ppn::ExitWithError(opened.status().message());
    mirror = *std::move(opened);
    mirror->Start();
    spdlog::info("ledger_mirror.started path={} entries={}", absl::GetFlag(FLAGS_ledger_mirror), mirror->size());
  }
  ppn::ledger::LedgerMirror* mirror_ptr = mirror.get();
  deps.node_status = [&mesh, tunnelled, off_loopback, mirror_ptr](ppn::host::v1::Heartbeat* hb) {
    if (mirror_ptr != nullptr) {
      std::string warning = mirror_ptr->Warning();
      if (!warning.empty()) hb->add_warnings(warning);
    }
    if (tunnelled) {
      *hb->mutable_mesh() = mesh.runner->Status();
    } else if (off_loopback) {
      hb->add_warnings(
          "no WireGuard (--wireguard off) on a non-loopback mesh address: traffic between this node and others "
          "is not tunnelled");
    }
  };
  ppn::host::VmManager manager(options, *std::move(catalog), std::move(deps));
  absl::Status started = manager.Start();
  if (!started.ok()) ppn::ExitWithError(started.message());
  ppn::host::HostAgentService service(&manager, absl::GetFlag(FLAGS_heartbeat_interval));
  absl::StatusOr<ppn::Revocations> revocations =
      ppn::OpenRevocations(options.state_dir + "/revoked.json", flags.mesh, absl::GetFlag(FLAGS_ledger), flags.tls);
  if (!revocations.ok()) ppn::ExitWithError(revocations.status().message());
  absl::StatusOr<ppn::StartedServer> server =
      ppn::host::StartHostAgentServer(flags.mesh, flags.listen, flags.tls, &service, revocations->list.get());
  if (!server.ok()) ppn::ExitWithError(server.status().message());
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) ppn::ExitWithError(port.message());
  spdlog::info("host_agent.started node={} port={} vms={}", options.node_id, server->port, manager.List().size());

  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("host_agent.stopping signal={} (VMs keep running)", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // The interface stays up, as the VMs do: the next start adopts it.
  if (mesh.runner != nullptr) mesh.runner->Stop();
  if (mesh.members != nullptr) mesh.members->Stop();
  if (mirror != nullptr) mirror->Stop();
  return 0;
}
