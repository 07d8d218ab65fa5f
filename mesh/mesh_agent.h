#pragma once

// MeshAgent keeps this node's WireGuard interface equal to the membership ledger. Each pass
// (RunOnce) brings the device up if it is not, takes the new `node.*` entries from the
// membership source (waiting for them, so a change is applied as soon as it arrives), folds
// them into the PeerTable and, once the source has caught up with the ledger, makes the
// device's peers exactly the table's: missing peers added, stale ones removed, allowed IPs
// and keepalives corrected. Until the catch-up is complete it changes nothing, so an agent
// restarted over an adopted interface keeps every tunnel while it rereads the ledger.
//
// Endpoints: a peer's endpoint is set when the peer is added or when the ledger's endpoint
// for it changes; otherwise the device keeps the one WireGuard learnt from the peer's
// authenticated packets (a roaming peer stays reachable).
//
// Errors (the device cannot come up, the ledger is unreachable, a rejected entry) are logged
// once when they start and kept in the Snapshot for the node's status; the agent retries
// the device every `up_retry`. Thread-safe: Start runs RunOnce on a thread of its own;
// Snapshot may be called from any thread. `*device`, `*source` and `*clock` must outlive it.

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "mesh/device.h"
#include "mesh/membership_source.h"
#include "mesh/peer_table.h"

namespace ppn::mesh {

struct MeshAgentOptions {
  PeerTableOptions table;
  absl::Duration poll = absl::Milliseconds(250);  // longest wait of one pass for new entries
  absl::Duration resync = absl::Seconds(10);      // re-read the device and repair drift this often
  absl::Duration up_retry = absl::Seconds(5);     // between attempts to bring the device up
};

// One peer as the node's status shows it.
struct MeshPeerStatus {
  std::string node_name;
  std::string mesh_address;
  std::string public_key;
  std::string endpoint;     // where WireGuard talks to it now ("" not yet known)
  bool hub = false;         // routes the mesh for this node
  bool configured = false;  // present on the interface
  absl::Time latest_handshake = absl::InfinitePast();
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
};

// What the heartbeat reports about the mesh.
struct MeshStatus {
  std::string interface_name;
  bool tunnel_up = false;
  std::string tunnel_error;  // why the tunnel is down, or the last failed change; "" none
  std::string backend;       // "kernel" or "wireguard-go"
  bool adopted = false;      // the interface was kept from a previous run
  std::string public_key;
  uint16_t listen_port = 0;
  std::string mesh_address;  // from this node's node.join
  bool joined = false;       // this node's node.join is applied
  bool revoked = false;      // this node was revoked: it has no peers
  bool forwarding = false;   // this node is the hub
  bool caught_up = false;    // the table reflects the whole ledger
  uint64_t ledger_next_index = 0;
  std::string membership_error;  // the ledger cannot be read; "" none
  std::vector<MeshPeerStatus> peers;
  std::vector<std::string> via_hub;
  std::vector<UnreachableNode> unreachable;
  std::vector<Rejection> rejected;  // the most recent refused entries, oldest first
};

class MeshAgent {
 public:
  // INVALID_ARGUMENT for bad table options.
  static absl::StatusOr<std::unique_ptr<MeshAgent>> Create(MeshAgentOptions options, Device* device,
                                                           MembershipSource* source, Clock* clock);
  ~MeshAgent() { Stop(); }

  void Start();
  void Stop();

  // One pass: see the class comment. Waits up to `wait` for new entries.
  void RunOnce(absl::Duration wait);

  // The mesh as the node's status shows it; reads the device for handshakes and traffic.
  MeshStatus Snapshot();

 private:
  MeshAgent(MeshAgentOptions options, PeerTable table, Device* device, MembershipSource* source, Clock* clock)
      : options_(std::move(options)), device_(device), source_(source), clock_(clock), table_(std::move(table)) {}
  void BringUp();
  void Reconcile();
  void SetTunnelError(const std::string& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MeshAgentOptions options_;
  Device* const device_;
  MembershipSource* const source_;
  Clock* const clock_;

  absl::Mutex mu_;
  PeerTable table_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool device_up_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_up_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string backend_ ABSL_GUARDED_BY(mu_);
  bool adopted_ ABSL_GUARDED_BY(mu_) = false;
  std::string tunnel_error_ ABSL_GUARDED_BY(mu_);
  bool caught_up_ ABSL_GUARDED_BY(mu_) = false;
  std::string membership_error_ ABSL_GUARDED_BY(mu_);
  bool dirty_ ABSL_GUARDED_BY(mu_) = true;  // the table changed since the last reconcile
  absl::Time last_sync_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool forwarding_ ABSL_GUARDED_BY(mu_) = false;
  // The ledger endpoint last applied per peer key: a change in the ledger is applied, a
  // roam WireGuard learnt is kept.
  std::map<std::string, std::string> applied_endpoints_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace ppn::mesh
