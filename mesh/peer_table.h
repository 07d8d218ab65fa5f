#pragma once

// PeerTable turns the membership ledger into the WireGuard peers one node should have. It
// folds `node.join` and `node.revoke` entries in ledger order and answers, for this node:
// every other live node as a peer (its /32, its endpoint when it has one), or no peer at all
// when neither side has an endpoint — unless an operator-chosen hub routes for them, in which
// case the hub's peer carries the whole mesh prefix. Pure: no I/O, no clock; not thread-safe
// (the mesh agent owns one under its lock).
//
// What a join must satisfy to be applied (otherwise it is rejected with a reason and changes
// nothing): a valid node name; `wireguard_public_key` of 44 characters of base64 for 32
// bytes; `mesh_address` inside the mesh prefix (not its network or broadcast address) and not
// held by another live node; a key no other live node holds and no revoked node held; the key
// this node's grant names for that node, if it names one; for a live node, the key it joined
// with (a changed key needs a revoke first). A repeated join with the same key updates the
// node's endpoint and address (a node that moved). A revoked node never comes back: its key
// stays refused; a later join of the same name with a new key is a new node.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mesh/addresses.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::mesh {

// The node.join attributes this table reads (pairing writes them).
inline constexpr char kMeshAddressAttribute[] = "mesh_address";
inline constexpr char kPublicKeyAttribute[] = "wireguard_public_key";
inline constexpr char kEndpointAttribute[] = "wireguard_endpoint";
inline constexpr char kAgentAddressAttribute[] = "agent_address";

// Persistent keepalive toward a peer when either side is behind NAT (has no endpoint).
inline constexpr int kNatKeepaliveSeconds = 25;

struct PeerTableOptions {
  std::string self;                                 // this node's name: the subject of its node.join
  std::string mesh_prefix = "10.8.0.0/24";          // every mesh address lies inside
  std::string hub;                                  // the node that routes for unreachable pairs; "" none
  std::map<std::string, std::string> granted_keys;  // node name → the public key this node's grant
                                                    // (and its own key file) names
};

// A live member of the mesh.
struct MeshNode {
  std::string name;
  std::string public_key;
  std::string mesh_address;
  std::string endpoint;  // host:port; "" behind NAT
  std::string agent_address;
  uint64_t join_index = 0;  // the ledger entry it joined with
};

// An entry that was refused, for the log and the node's status.
struct Rejection {
  uint64_t index = 0;
  std::string kind;
  std::string subject;
  std::string reason;
};

// One peer this node's interface should have.
struct MeshPeer {
  std::string node_name;
  std::string public_key;
  std::string mesh_address;
  std::string endpoint;                  // "" when the peer is behind NAT: it reaches us first
  std::vector<std::string> allowed_ips;  // its /32, or the whole prefix for the hub
  int persistent_keepalive_seconds = 0;  // kNatKeepaliveSeconds when either side is behind NAT
  bool hub = false;                      // this peer routes the mesh for us
};

// A live node this node has no peer for.
struct UnreachableNode {
  std::string node_name;
  std::string reason;
};

struct PeerTableView {
  std::optional<MeshNode> self;              // this node's own record, once its node.join is applied
  bool self_revoked = false;                 // this node was revoked: it gets no peers
  bool forwarding = false;                   // this node is the hub: it forwards between its peers
  std::vector<MeshPeer> peers;               // by mesh address
  std::vector<std::string> via_hub;          // live nodes reached only through the hub
  std::vector<UnreachableNode> unreachable;  // live nodes with no path from this node
};

class PeerTable {
 public:
  // INVALID_ARGUMENT for an empty `self`, a bad prefix or a bad granted key.
  static absl::StatusOr<PeerTable> Create(PeerTableOptions options);

  // Folds one ledger entry. Entries must come in index order; one at or below the last index
  // seen is a repeat and ignored. Entries of other kinds, and joins or revokes whose outcome
  // is not SUCCESS, change nothing. Returns the rejection when the entry is refused.
  std::optional<Rejection> Apply(const ppn::ledger::v1::Entry& entry);

  // The peers this node should have now.
  PeerTableView Compute() const;

  std::vector<MeshNode> LiveNodes() const;
  // The most recent rejections (at most kMaxRejections), oldest first.
  const std::vector<Rejection>& rejections() const { return rejections_; }
  // The index after the last entry seen (0 before any).
  uint64_t next_index() const { return next_index_; }

  static constexpr size_t kMaxRejections = 100;

 private:
  PeerTable(PeerTableOptions options, Ipv4Prefix prefix) : options_(std::move(options)), prefix_(prefix) {}
  std::optional<std::string> CheckJoin(const ppn::ledger::v1::Entry& entry) const;
  std::optional<std::string> ApplyRevoke(const ppn::ledger::v1::Entry& entry);

  PeerTableOptions options_;
  Ipv4Prefix prefix_;
  uint64_t next_index_ = 0;
  std::map<std::string, MeshNode> live_;             // by name
  std::map<std::string, std::string> revoked_keys_;  // public key → the revoked node's name
  std::set<std::string> revoked_names_;              // names revoked at least once
  std::vector<Rejection> rejections_;
};

}  // namespace ppn::mesh
