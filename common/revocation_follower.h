#pragma once

// RevocationFollower keeps a RevocationList equal to the ledger: it reads the membership
// entries (mesh::MembershipSource, the reader the mesh agent already uses) and applies every
// `node.revoke` to the list. Services that reach the ledger over gRPC use FollowLedger; the
// ledger itself feeds its list from its own log (ledger/log_membership_source.h).
//
// Owns its thread (Start/Stop) and, with FollowLedger, the gRPC source; `*list` (and a source
// passed in) must outlive it. RunOnce is the loop's body, for tests.

#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/revocation_list.h"
#include "common/tls_credentials.h"
#include "mesh/membership_source.h"

namespace ppn::mesh {
class GrpcMembershipSource;
}  // namespace ppn::mesh

namespace ppn {

class RevocationFollower {
 public:
  RevocationFollower(mesh::MembershipSource* source, RevocationList* list);
  ~RevocationFollower();

  // A follower of the ledger at `ledger_address`, reached with `tls` (the service's own
  // certificate: every service role may read the ledger). Started.
  static std::unique_ptr<RevocationFollower> FollowLedger(const std::string& ledger_address, const TlsFiles& tls,
                                                          RevocationList* list);

  void Start();
  void Stop();
  // Waits up to `wait` for entries and applies them; returns how many identities it revoked.
  int RunOnce(absl::Duration wait);

 private:
  std::unique_ptr<mesh::GrpcMembershipSource> owned_;  // FollowLedger's source; stopped after the thread
  mesh::MembershipSource* const source_;
  RevocationList* const list_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ppn

namespace ppn {

// What a service's main holds: its persisted list and, when it knows the ledger, the follower
// that keeps the list equal to it.
struct Revocations {
  std::unique_ptr<RevocationList> list;
  std::unique_ptr<RevocationFollower> follower;  // null without a ledger
};

// Opens the list persisted at `path` and follows the ledger at `ledger_address` ("": the
// persisted list only). The list's error (INVALID_ARGUMENT naming the file) otherwise.
absl::StatusOr<Revocations> OpenRevocations(const std::string& path, const std::string& mesh,
                                            const std::string& ledger_address, const TlsFiles& tls);

}  // namespace ppn
