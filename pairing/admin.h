#pragma once

// AdminCore is the founding node's side of the Genesis ceremony. It holds the mesh CA and
// the WireGuard peer table; given the joiner's address and the code the operator read on the
// joiner's console, it runs CPace as initiator, confirms the key, signs the joiner's CSR with
// the identity the admin decides (spiffe://<mesh>/host/<name>), hands out a mesh address and
// the peer records, and appends node.join to the ledger. The founding node is a member too:
// AppendFoundingJoin records its own node.join (mesh address .1, its WireGuard key and
// endpoint, its agent's address), so every node learns it from the ledger alone.
// Thread-safe (one ceremony at a time).

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/random.h"
#include "common/sqlite.h"
#include "common/x509.h"
#include "ppn/ledger/v1/ledger_service.pb.h"
#include "ppn/pairing/v1/pairing_service.pb.h"

namespace ppn::pairing {

using LedgerAppend = std::function<absl::StatusOr<uint64_t>(const ppn::ledger::v1::AppendRequest&)>;

class AdminCore {
 public:
  struct Options {
    std::string mesh;
    std::string admin_name = "admin";
    x509::Identity ca;                           // SECRET key: stays on this node
    ppn::pairing::v1::WireGuardPeer admin_peer;  // this node's own record (its node name, mesh address .1)
    std::string agent_address;                   // host:port of this node's host agent, for its node.join
    std::string network = "10.8.0";              // /24: nodes get .2 to .254
    std::string wireguard_peers_file;            // if set, rewritten in wg-quick [Peer] form after each join
  };
  // `peers_db` persists the peer table.
  static absl::StatusOr<std::unique_ptr<AdminCore>> Create(Options options, const std::string& peers_db,
                                                           LedgerAppend ledger, RandomSource* random);

  // INVALID_ARGUMENT for a mistyped code (nothing is sent), UNAVAILABLE if the joiner cannot
  // be reached, PERMISSION_DENIED if key confirmation fails (wrong code or a relay).
  absl::StatusOr<ppn::pairing::v1::ApproveNodeResponse> Approve(const std::string& joiner_address,
                                                                const std::string& typed_code);
  // The founding node and every joined node that is not revoked.
  std::vector<ppn::pairing::v1::WireGuardPeer> Peers();

  // Appends `node.revoke` for `node_name` (attributes spiffe_id, reason, actor — the caller's
  // SPIFFE id —, certificate_sha256 when known) and records it, so the name is never issued
  // again and drops out of every grant's peers. Repeating it appends nothing new and returns
  // the first entry with already_revoked. NOT_FOUND if the node never joined, INVALID_ARGUMENT
  // without a reason (or one over 200 characters or with control characters) or for the
  // founding node, the ledger's error (nothing recorded) otherwise.
  absl::StatusOr<ppn::pairing::v1::RevokeNodeResponse> Revoke(const std::string& node_name, const std::string& reason,
                                                              const std::string& actor);

  // Appends the founding node's own node.join (subject admin_peer.node_name, attributes
  // mesh_address, wireguard_public_key, wireguard_endpoint, agent_address, spiffe_id) with an
  // idempotency key made of its name and key, so repeating it (every start) appends it once.
  // Returns the entry's index. INVALID_ARGUMENT if the record is incomplete; the ledger's
  // error (UNAVAILABLE while it is down) otherwise.
  absl::StatusOr<uint64_t> AppendFoundingJoin();

 private:
  AdminCore(Options options, std::unique_ptr<Database> db, LedgerAppend ledger, RandomSource* random)
      : options_(std::move(options)), db_(std::move(db)), ledger_(std::move(ledger)), random_(random) {}
  const Options options_;
  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  const LedgerAppend ledger_;
  RandomSource* const random_;
};

}  // namespace ppn::pairing
