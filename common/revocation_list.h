#pragma once

// RevocationList is the set of mesh identities no server accepts any more: the nodes the
// ledger's `node.revoke` entries name. Every mTLS server consults one in its RoleAuthProcessor
// (common/role_auth_processor.h), so a revoked node's certificate is refused by every method of
// every service before any handler runs, although it still chains to the mesh CA.
//
// What is revoked is the identity, spiffe://<mesh>/host/<node>, not one certificate: the
// pairing admin never issues a certificate for a revoked name again (a revoked node comes back
// only through a new ceremony under a new name), so the identity names every certificate the
// node ever held, and a copy of its key is worth nothing anywhere in the mesh. The entries
// stay for good: a list of node names is small, and a name is never reused.
//
// The list is persisted (JSON, written atomically beside the service's other state) so a
// restarted service refuses a revoked node from its first call, before it has read the ledger
// again; RevocationFollower (common/revocation_follower.h) feeds it from the ledger. Pure C++.
// Thread-safe: lookups take a shared lock and are a hash lookup.

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/spiffe_id.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn {

// One revoked identity and why.
struct Revocation {
  std::string spiffe_id;           // spiffe://<mesh>/host/<node>
  std::string node;                // the node name (the entry's subject)
  uint64_t ledger_index = 0;       // the node.revoke entry
  std::string reason;              // the operator's words (never a secret)
  std::string certificate_sha256;  // hex SHA-256 of the certificate pairing issued, when known
};

class RevocationList {
 public:
  // Loads the list persisted at `path` (none yet: empty) and persists every change there.
  // INVALID_ARGUMENT naming the file if it does not parse: a service must not start believing
  // nobody is revoked.
  static absl::StatusOr<std::unique_ptr<RevocationList>> Open(const std::string& path, std::string mesh);
  // A list kept in memory only (tests, and the services that follow the ledger in-process).
  static std::unique_ptr<RevocationList> InMemory(std::string mesh);

  // OK unless `peer` is revoked; then UNAUTHENTICATED naming the identity and the ledger entry
  // that revoked it (the certificate is genuine, the identity is no longer trusted).
  absl::Status Check(const SpiffeId& peer) const;
  bool IsRevoked(const std::string& spiffe_id) const;

  // Applies one ledger entry: a successful `node.revoke` adds its identity (the entry's
  // `spiffe_id` attribute, else spiffe://<mesh>/host/<subject>); every other entry is ignored.
  // Returns whether the list changed. The write's error if it cannot be persisted (the entry
  // still applies in memory: refusing is the safe side).
  absl::StatusOr<bool> Apply(const ppn::ledger::v1::Entry& entry);

  std::vector<Revocation> List() const;

 private:
  RevocationList(std::string path, std::string mesh) : path_(std::move(path)), mesh_(std::move(mesh)) {}
  absl::Status PersistLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::vector<Revocation> SortedLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const std::string path_;  // "" in memory only
  const std::string mesh_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Revocation> revoked_ ABSL_GUARDED_BY(mu_);  // by spiffe_id
};

}  // namespace ppn
