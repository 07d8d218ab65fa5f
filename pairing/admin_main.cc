// pairing_admin: the founding node's pairing service (role pairing-admin). Holds the mesh CA
// and the WireGuard peer table; the operator approves joiners through it with
// `ppnctl node approve ADDR --code CODE`; each join is appended to the ledger. With
// --node_name (and --wireguard_key_file) the founding node is a member of its own mesh: at
// start it appends its own node.join (once: the ledger's idempotency key), retrying until
// the ledger takes it.

#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/grpc_server.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/random.h"
#include "common/revocation_follower.h"
#include "common/roles.h"
#include "common/rpc_interceptors.h"
#include "common/service_flags.h"
#include "grpcpp/create_channel.h"
#include "mesh/wireguard_key.h"
#include "pairing/pairing_services.h"
#include "pairing/wireguard.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, ca_cert, "", "Mesh CA certificate (PEM)");
ABSL_FLAG(std::string, ca_key, "", "Mesh CA private key (PEM); never leaves this node");
ABSL_FLAG(std::string, ledger, "127.0.0.1:7101", "The ledger's address");
ABSL_FLAG(std::string, peers_db, "pairing-admin.db", "SQLite file of the peer table");
ABSL_FLAG(std::string, wireguard_public_key, "", "This node's WireGuard public key (or use --wireguard_key_file)");
ABSL_FLAG(std::string, wireguard_key_file, "",
          "This node's WireGuard private key (mode 0600; created if missing); its host agent uses the same file");
ABSL_FLAG(std::string, wireguard_endpoint, "", "host:port where this node's WireGuard listens");
ABSL_FLAG(std::string, node_name, "",
          "This (founding) node's node id, e.g. cloud: its own node.join is appended at start (needs "
          "--wireguard_key_file)");
ABSL_FLAG(std::string, agent_address, "", "host:port of this node's host agent, for its node.join");

namespace {

int Fail(const std::string& why) {
  std::fprintf(stderr, "pairing_admin: %s\n", why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("pairing_admin", argc, argv);
  auto cert = ppn::ReadFile(absl::GetFlag(FLAGS_ca_cert));
  auto key = ppn::ReadFile(absl::GetFlag(FLAGS_ca_key));
  if (!cert.ok() || !key.ok()) return Fail("--ca_cert and --ca_key must be readable");
  ppn::pairing::AdminCore::Options options;
  options.mesh = flags.mesh;
  options.ca = {*cert, *key};
  std::string wg_pub = absl::GetFlag(FLAGS_wireguard_public_key);
  const std::string key_file = absl::GetFlag(FLAGS_wireguard_key_file), node_name = absl::GetFlag(FLAGS_node_name);
  if (!key_file.empty()) {
    bool created = false;
    absl::StatusOr<ppn::mesh::WireGuardKeyPair> pair = ppn::mesh::LoadOrCreatePrivateKeyFile(key_file, &created);
    if (!pair.ok()) return Fail(std::string(pair.status().message()));
    if (!wg_pub.empty() && wg_pub != pair->public_key) {
      return Fail("--wireguard_public_key is not the public key of --wireguard_key_file");
    }
    wg_pub = pair->public_key;
    if (created) spdlog::info("pairing_admin.wireguard_key_created file={}", key_file);
  } else if (!node_name.empty()) {
    return Fail("--node_name needs --wireguard_key_file: the founding node's key must be the same on every start");
  }
  if (wg_pub.empty()) wg_pub = ppn::pairing::NewWireGuardKeys()->public_key;
  options.admin_peer.set_node_name(node_name.empty() ? "admin" : node_name);
  options.admin_peer.set_public_key(wg_pub);
  options.admin_peer.set_endpoint(absl::GetFlag(FLAGS_wireguard_endpoint));
  options.admin_peer.set_mesh_address("10.8.0.1");
  options.admin_peer.add_allowed_ips("10.8.0.0/24");
  options.agent_address = absl::GetFlag(FLAGS_agent_address);
  options.wireguard_peers_file = absl::GetFlag(FLAGS_peers_db) + ".wg-peers.conf";
  std::shared_ptr<ppn::ledger::v1::Ledger::Stub> ledger = ppn::ledger::v1::Ledger::NewStub(
      ppn::MeshChannel(absl::GetFlag(FLAGS_ledger), ppn::MtlsChannelCredentials(flags.tls)));
  auto append = [ledger](const ppn::ledger::v1::AppendRequest& r) -> absl::StatusOr<uint64_t> {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ppn::ledger::v1::AppendResponse resp;
    grpc::Status s = ledger->Append(&ctx, r, &resp);
    if (!s.ok()) {
      absl::Status failed = ppn::FromGrpcStatus(s);
      return absl::Status(failed.code(), "the ledger append failed: " + s.error_message());
    }
    if (resp.duplicate()) spdlog::info("ledger.append_duplicate kind={} index={}", r.kind(), resp.index());
    return resp.index();
  };
  auto core =
      ppn::pairing::AdminCore::Create(options, absl::GetFlag(FLAGS_peers_db), append, ppn::OpenSslRandom::Get());
  if (!core.ok()) return Fail(std::string(core.status().message()));
  ppn::pairing::AdminService service(core->get());
  ppn::RolePolicy policy = ppn::pairing::PairingAdminRolePolicy(flags.mesh);
  absl::StatusOr<ppn::Revocations> revocations = ppn::OpenRevocations(
      absl::GetFlag(FLAGS_peers_db) + ".revoked.json", flags.mesh, absl::GetFlag(FLAGS_ledger), flags.tls);
  if (!revocations.ok()) return Fail(std::string(revocations.status().message()));
  auto server = ppn::StartMeshServer(flags.listen, flags.tls, std::move(policy), {&service}, revocations->list.get());
  if (!server.ok()) return Fail(std::string(server.status().message()));
  (void)ppn::WritePortFile(server->port);
  spdlog::info("pairing_admin.started port={}", server->port);
  // The founding node's own membership, retried until the ledger takes it.
  absl::Mutex stop_mu;
  bool stopping = false;
  std::thread founding;
  if (!node_name.empty()) {
    founding = std::thread([&] {
      absl::Duration backoff = absl::Milliseconds(200);
      while (true) {
        absl::StatusOr<uint64_t> index = (*core)->AppendFoundingJoin();
        if (index.ok()) {
          spdlog::info("node.founding_joined node={} mesh_address={} ledger_index={}", node_name,
                       options.admin_peer.mesh_address(), *index);
          return;
        }
        if (index.status().code() == absl::StatusCode::kInvalidArgument ||
            index.status().code() == absl::StatusCode::kPermissionDenied) {
          spdlog::error("node.founding_join_refused node={} error={}", node_name,
                        ppn::LogValue(index.status().message()));
          return;
        }
        spdlog::warn("node.founding_join_retry node={} error={}", node_name, ppn::LogValue(index.status().message()));
        absl::MutexLock l(&stop_mu);
        if (stop_mu.AwaitWithTimeout(absl::Condition(&stopping), backoff)) return;
        backoff = std::min(backoff * 2, absl::Seconds(10));
      }
    });
  }
  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("pairing_admin.stopping signal={}", sig);
  {
    absl::MutexLock l(&stop_mu);
    stopping = true;
  }
  if (founding.joinable()) founding.join();
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
