#pragma once

// The host agent's WireGuard mesh: the node's tunnel brought up from its pairing grant and
// kept equal to the membership ledger by a mesh::MeshAgent, and the tunnel's state as the
// heartbeat reports it (ppn.types.v1.MeshStatus).
//
// The grant (node.json in the pairing out dir) names this node's mesh address, its key file,
// the WireGuard keys the ceremony vouched for, and the founding node. The founding node's
// ledger is served inside the mesh, so before the first read the founding node is configured
// as a peer straight from the grant (BootstrapDevice); once the ledger is caught up the peer
// table is the only authority and keeps or removes it like any other. The founding node itself
// has no grant: it runs with its key file and its mesh address (10.8.0.1) and trusts its own
// ledger.
//
// Nothing falls back to cleartext: if the tunnel cannot come up Start fails with the reason
// (the agent exits with it); every later fault (an entry the peer table refused, the ledger
// unreachable, the interface gone, this node revoked) is logged by the mesh agent and listed in
// MeshStatus.problems. Thread-safe; Start/Stop.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "mesh/device.h"
#include "mesh/membership_source.h"
#include "mesh/mesh_agent.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::host {

// The founding node as the grant names it.
struct FoundingPeer {
  std::string name;
  std::string mesh_address;
  std::string public_key;
  std::string endpoint;  // host:port; "" behind NAT
};

// What the host agent reads from the pairing out dir's node.json.
struct MeshGrant {
  std::string node_name;
  std::string mesh_address;
  int prefix_length = 24;
  std::string key_file;  // absolute: node.json's wireguard_key_file, relative to its directory
  std::string endpoint;  // this node's WireGuard endpoint; "" behind NAT
  std::map<std::string, std::string> granted_keys;  // node name → public key, this node's included
  std::optional<FoundingPeer> founding;
};

// Reads and checks node.json: NOT_FOUND if absent; INVALID_ARGUMENT naming the field that is
// missing or malformed (a grant written before the founding node was recorded in it says to
// pair again).
absl::StatusOr<MeshGrant> LoadMeshGrant(const std::string& path);

// Configures the grant's founding node as a peer whenever the interface comes up without it,
// so the ledger can be reached; everything else is the wrapped device's. Thread-safe as the
// wrapped device is.
class BootstrapDevice final : public mesh::Device {
 public:
  BootstrapDevice(mesh::Device* inner, std::optional<mesh::PeerConfig> founding)
      : inner_(inner), founding_(std::move(founding)) {}
  const std::string& name() const override { return inner_->name(); }
  absl::StatusOr<mesh::UpResult> Up() override;
  absl::Status Down() override { return inner_->Down(); }
  absl::Status UpdatePeers(const std::vector<mesh::PeerUpdate>& updates) override {
    return inner_->UpdatePeers(updates);
  }
  absl::Status EnableForwarding() override { return inner_->EnableForwarding(); }
  absl::StatusOr<mesh::DeviceState> State() override { return inner_->State(); }

 private:
  mesh::Device* const inner_;
  const std::optional<mesh::PeerConfig> founding_;
};

struct MeshRunnerOptions {
  std::string node_id;
  std::string mesh_address;        // what the agent serves and forwards on (--mesh_address)
  std::string public_key;          // of this node's key file
  std::optional<MeshGrant> grant;  // none on the founding node
  std::string hub;                 // --mesh_hub; "" none
  mesh::MeshAgentOptions agent;    // table.self/hub/granted_keys are filled in by Create
};

// The heartbeat's view of a mesh snapshot (pure, so every message is unit-tested). tunnel_up
// only when the interface is up and configured from the whole ledger; problems say why not
// and what else is wrong.
ppn::types::v1::MeshStatus MeshStatusProto(const mesh::MeshStatus& s, const std::string& configured_address);

class MeshRunner {
 public:
  // INVALID_ARGUMENT when the options contradict the grant (another node's, another mesh
  // address, a key file whose key the grant does not name). `device`, `source` and `clock`
  // must outlive it.
  static absl::StatusOr<std::unique_ptr<MeshRunner>> Create(MeshRunnerOptions options, mesh::Device* device,
                                                            mesh::MembershipSource* source, Clock* clock);
  ~MeshRunner() { Stop(); }

  // Brings the tunnel up (adopting the interface a previous run left) and starts following the
  // ledger. FAILED_PRECONDITION, or the device's error, when the tunnel cannot come up; then
  // nothing runs.
  absl::Status Start();
  void Stop();

  ppn::types::v1::MeshStatus Status();

 private:
  MeshRunner(MeshRunnerOptions options, std::unique_ptr<BootstrapDevice> device)
      : options_(std::move(options)), device_(std::move(device)) {}

  const MeshRunnerOptions options_;
  const std::unique_ptr<BootstrapDevice> device_;
  std::unique_ptr<mesh::MeshAgent> agent_;
};

}  // namespace ppn::host
