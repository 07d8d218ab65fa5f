// pairing: run on a new node to join the mesh. Generates the node's identity key, CSR and
// WireGuard keys locally, shows the short code, and waits (600 s at most) for the operator to
// approve it on the founding node. Writes node.pem, node.key, ca.pem, wireguard.key (the
// WireGuard private key, 0600, for the host agent's mesh interface), wg-ppn.conf and
// node.json (the grant, as the host agent's --mesh_grant reads it) into --out_dir and exits 0;
// exits 1 when the ceremony fails or expires.
// --wireguard_endpoint (host:port where peers reach this node's WireGuard; empty behind NAT)
// goes into the node's node.join in the ledger.

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/logging.h"
#include "common/random.h"
#include "mesh/addresses.h"
#include "nlohmann/json.hpp"
#include "pairing/pairing_services.h"
#include "pairing/short_code.h"
#include "pairing/wireguard.h"

ABSL_FLAG(std::string, name, "", "This node's name, e.g. laptop-c");
ABSL_FLAG(std::string, listen, "0.0.0.0:7105", "Where the admin reaches this joiner");
ABSL_FLAG(std::string, out_dir, "ppn-node", "Directory for the node's keys and configuration");
ABSL_FLAG(std::string, agent_address, "",
          "host:port of this node's host agent, recorded in the ledger; :PORT when it serves on the mesh address "
          "this node is granted");
ABSL_FLAG(std::string, wireguard_endpoint, "", "host:port of this node's WireGuard, if reachable");
ABSL_FLAG(absl::Duration, window, absl::Seconds(600), "How long the code stays valid");

namespace {

int Fail(const std::string& why) {
  std::fprintf(stderr, "pairing: %s\n", why.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("pairing --name=NODE [--listen=0.0.0.0:7105] [--out_dir=DIR]");
  absl::ParseCommandLine(argc, argv);
  (void)ppn::InitLogging("pairing", "warn");
  std::string name = absl::GetFlag(FLAGS_name), dir = absl::GetFlag(FLAGS_out_dir);
  if (name.empty()) return Fail("--name is required");
  const std::string endpoint = absl::GetFlag(FLAGS_wireguard_endpoint);
  if (!endpoint.empty() && !ppn::mesh::IsValidEndpoint(endpoint)) {
    return Fail("--wireguard_endpoint must be host:port (or empty for a node behind NAT)");
  }
  std::filesystem::create_directories(dir);
  auto node_key = ppn::x509::GenerateKey();
  auto wg = ppn::pairing::NewWireGuardKeys();
  auto tls = ppn::pairing::EphemeralTlsIdentity(name);
  auto code = ppn::pairing::NewShortCode(*ppn::OpenSslRandom::Get());
  if (!node_key.ok() || !wg.ok() || !tls.ok() || !code.ok()) return Fail("key generation failed");
  ppn::x509::CertRequest csr;
  csr.common_name = name;
  ppn::pairing::v1::EnrollmentRequest req;
  req.set_node_name(name);
  req.set_wireguard_public_key(wg->public_key);
  req.set_csr_pem(*ppn::x509::MakeCsr(*node_key, csr));
  req.set_agent_address(absl::GetFlag(FLAGS_agent_address));
  req.set_wireguard_endpoint(endpoint);
  ppn::pairing::JoinerCore::Options options;
  options.code = *ppn::pairing::ParseShortCode(*code);
  options.tls_fingerprint = *ppn::x509::Fingerprint(tls->cert_pem);
  options.window = absl::GetFlag(FLAGS_window);
  ppn::pairing::JoinerCore core(options, req, *node_key, ppn::RealClock::Get(), ppn::OpenSslRandom::Get());
  ppn::pairing::JoinerService service(&core);
  auto server = ppn::pairing::StartJoinerServer(absl::GetFlag(FLAGS_listen), *tls, dir, &service);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  // The operator reads this on the console and types it on the founding node.
  std::printf(
      "\n  Pairing code for %s:   %s\n\n  On the founding node: ppnctl node approve <this host>:%d --code %s\n"
      "  (valid for %s)\n\n",
      name.c_str(), code->c_str(), server->port, code->c_str(), absl::FormatDuration(options.window).c_str());
  std::fflush(stdout);
  auto grant = core.WaitForOutcome(options.window + absl::Seconds(1));
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  std::filesystem::remove(dir + "/pairing-tls.key");
  std::filesystem::remove(dir + "/pairing-tls.pem");
  if (!grant.ok()) return Fail(std::string(grant.status().message()));
  std::vector<ppn::pairing::v1::WireGuardPeer> peers = {grant->admin_peer()};
  peers.insert(peers.end(), grant->peers().begin(), grant->peers().end());
  // The keys the grant names for the founding node and the nodes before this one: the mesh
  // agent refuses a later node.join that names another key for them.
  nlohmann::json granted = nlohmann::json::object();
  for (const auto& p : peers) granted[p.node_name()] = p.public_key();
  granted[name] = wg->public_key;
  nlohmann::json node = {{"name", name},
                         {"mesh", grant->mesh_name()},
                         {"mesh_address", grant->mesh_address()},
                         {"mesh_prefix_length", grant->mesh_prefix_length()},
                         {"wireguard_public_key", wg->public_key},
                         {"wireguard_key_file", "wireguard.key"},
                         {"wireguard_endpoint", endpoint},
                         {"granted_wireguard_keys", granted},
                         // The first peer the host agent configures, before it can read the
                         // ledger (which the founding node serves inside the mesh).
                         {"founding_node",
                          {{"name", grant->admin_peer().node_name()},
                           {"mesh_address", grant->admin_peer().mesh_address()},
                           {"wireguard_public_key", grant->admin_peer().public_key()},
                           {"wireguard_endpoint", grant->admin_peer().endpoint()}}}};
  // The certificate goes last: its presence is what says the node has joined.
  for (const auto& [file, data, mode] : std::vector<std::tuple<std::string, std::string, mode_t>>{
           {"node.key", *node_key, 0600},
           {"wireguard.key", wg->private_key + "\n", 0600},
           {"ca.pem", grant->mesh_ca_pem(), 0644},
           {"wg-ppn.conf",
            ppn::pairing::WgQuickConfig(*wg, grant->mesh_address(), grant->mesh_prefix_length(), peers, 51820), 0600},
           {"node.json", node.dump(2) + "\n", 0644},
           {"node.pem", grant->node_certificate_pem(), 0644}}) {
    absl::Status written = ppn::WriteFileAtomically(dir + "/" + file, data, mode);
    if (!written.ok()) return Fail(std::string(written.message()));
  }
  std::printf("  Joined %s as %s. Configuration in %s (wg-quick up %s/wg-ppn.conf to bring up WireGuard).\n",
              grant->mesh_name().c_str(), grant->mesh_address().c_str(), dir.c_str(), dir.c_str());
  return 0;
}
