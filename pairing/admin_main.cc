// pairing_admin: the founding node's pairing service (role pairing-admin). Holds the mesh CA
// and the WireGuard peer table; the operator approves joiners through it with
// `ppnctl node approve ADDR --code CODE`; each join is appended to the ledger.

#include <cstdio>

#include "absl/flags/flag.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/grpc_server.h"
#include "common/random.h"
#include "common/roles.h"
#include "common/service_flags.h"
#include "grpcpp/create_channel.h"
#include "pairing/pairing_services.h"
#include "pairing/wireguard.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, ca_cert, "", "Mesh CA certificate (PEM)");
ABSL_FLAG(std::string, ca_key, "", "Mesh CA private key (PEM); never leaves this node");
ABSL_FLAG(std::string, ledger, "127.0.0.1:7101", "The ledger's address");
ABSL_FLAG(std::string, peers_db, "pairing-admin.db", "SQLite file of the peer table");
ABSL_FLAG(std::string, wireguard_public_key, "", "This node's WireGuard public key");
ABSL_FLAG(std::string, wireguard_endpoint, "", "host:port where this node's WireGuard listens");

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("pairing_admin", argc, argv);
  auto cert = ppn::ReadFile(absl::GetFlag(FLAGS_ca_cert));
  auto key = ppn::ReadFile(absl::GetFlag(FLAGS_ca_key));
  if (!cert.ok() || !key.ok()) {
    std::fprintf(stderr, "pairing_admin: --ca_cert and --ca_key must be readable\n");
    return 2;
  }
  ppn::pairing::AdminCore::Options options;
  options.mesh = flags.mesh;
  options.ca = {*cert, *key};
  std::string wg_pub = absl::GetFlag(FLAGS_wireguard_public_key);
  if (wg_pub.empty()) wg_pub = ppn::pairing::NewWireGuardKeys()->public_key;
  options.admin_peer.set_node_name("admin");
  options.admin_peer.set_public_key(wg_pub);
  options.admin_peer.set_endpoint(absl::GetFlag(FLAGS_wireguard_endpoint));
  options.admin_peer.set_mesh_address("10.8.0.1");
  options.admin_peer.add_allowed_ips("10.8.0.0/24");
  options.wireguard_peers_file = absl::GetFlag(FLAGS_peers_db) + ".wg-peers.conf";
  std::shared_ptr<ppn::ledger::v1::Ledger::Stub> ledger = ppn::ledger::v1::Ledger::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_ledger), ppn::MtlsChannelCredentials(flags.tls)));
  auto append = [ledger](const ppn::ledger::v1::AppendRequest& r) -> absl::StatusOr<uint64_t> {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ppn::ledger::v1::AppendResponse resp;
    grpc::Status s = ledger->Append(&ctx, r, &resp);
    if (!s.ok()) return absl::UnavailableError("the node joined but the ledger append failed: " + s.error_message());
    return resp.index();
  };
  auto core =
      ppn::pairing::AdminCore::Create(options, absl::GetFlag(FLAGS_peers_db), append, ppn::OpenSslRandom::Get());
  if (!core.ok()) {
    std::fprintf(stderr, "pairing_admin: %s\n", std::string(core.status().message()).c_str());
    return 2;
  }
  ppn::pairing::AdminService service(core->get());
  ppn::RolePolicy policy(flags.mesh);
  policy.AllowService("ppn.pairing.v1.PairingAdmin", {ppn::roles::kOperator});
  auto server = ppn::StartMeshServer(flags.listen, flags.tls, std::move(policy), {&service});
  if (!server.ok()) {
    std::fprintf(stderr, "pairing_admin: %s\n", std::string(server.status().message()).c_str());
    return 2;
  }
  (void)ppn::WritePortFile(server->port);
  spdlog::info("pairing_admin.started port={}", server->port);
  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("pairing_admin.stopping signal={}", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
