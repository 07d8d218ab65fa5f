#pragma once

// LedgerMirror keeps a verified copy of a ledger in a ledger file of its own (the same SQLite
// form the ledger writes, so the `ledger` binary can serve it as is): losing the founding node's
// disk then loses no audit record. It follows the ledger through a LedgerSource, and takes in
// new entries only together with a signed checkpoint that (1) verifies with the ledger's key,
// (2) has the root the mirror computes itself over its own copy plus the new entries, and
// (3) is consistent with the last checkpoint it accepted. Anything else (a rewritten history,
// a bad signature, an entry whose hash does not match) is refused: nothing is written and the
// last good state stays. Entries and their checkpoint commit in one transaction, so a crash
// leaves a consistent copy and a restart resumes from its size.
//
// Pure C++ (protos as data); the gRPC adapter is grpc_ledger_source.h. Owns its store; `source`
// must outlive it. Thread-safe: SyncOnce calls are serialized; accessors may be called anytime.

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ledger/ledger_store.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::ledger {

// The read side of the ledger's API the mirror needs.
class LedgerSource {
 public:
  virtual ~LedgerSource() = default;
  virtual absl::StatusOr<ppn::ledger::v1::GetCheckpointResponse> GetCheckpoint() = 0;
  virtual absl::StatusOr<ppn::ledger::v1::GetEntriesResponse> GetEntries(uint64_t start_index, int page_size) = 0;
  virtual absl::StatusOr<std::vector<Hash>> GetConsistencyProof(uint64_t first_tree_size,
                                                                uint64_t second_tree_size) = 0;
};

class LedgerMirror {
 public:
  struct Options {
    // The ledger's note verifier key, obtained out of band. Empty: the key the mirror's file
    // already names, else the key of the first checkpoint (trusted on first use, then pinned).
    std::string verifier_key;
    // How often the background loop asks for a new checkpoint.
    absl::Duration interval = absl::Seconds(5);
    int page_size = 1000;
  };

  // Opens (creating if missing) the mirror file at `path`. FAILED_PRECONDITION if the file
  // already follows a ledger with another key than `options.verifier_key`.
  static absl::StatusOr<std::unique_ptr<LedgerMirror>> Open(const std::string& path, LedgerSource* source,
                                                            Options options);
  ~LedgerMirror();  // stops the loop

  // Fetches the latest checkpoint and the entries it adds, verifies, and commits them.
  // DATA_LOSS for anything that does not verify (nothing written, Warning() says what);
  // the source's own error when it cannot be reached.
  absl::Status SyncOnce();

  // Runs SyncOnce every `interval` on a thread of its own until Stop().
  void Start();
  void Stop();

  // Entries held (always the size of the last accepted checkpoint).
  uint64_t size() const { return store_->size(); }
  // The last accepted checkpoint's signed note; empty before the first.
  std::string LatestCheckpointNote() const;
  // Why the last sync was refused, in words for a heartbeat's warnings; empty when the last
  // sync verified (or only failed to reach the ledger).
  std::string Warning() const;

 private:
  LedgerMirror(std::unique_ptr<LedgerStore> store, LedgerSource* source, Options options);
  absl::Status Sync() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sync_mu_);
  absl::Status Refuse(const std::string& why);
  void Loop();

  const std::unique_ptr<LedgerStore> store_;
  LedgerSource* const source_;
  const Options options_;

  absl::Mutex sync_mu_;
  std::string verifier_key_ ABSL_GUARDED_BY(sync_mu_);  // pinned; empty until the first checkpoint
  std::string origin_ ABSL_GUARDED_BY(sync_mu_);

  mutable absl::Mutex state_mu_;
  std::string warning_ ABSL_GUARDED_BY(state_mu_);
  std::string latest_note_ ABSL_GUARDED_BY(state_mu_);
  bool stopping_ ABSL_GUARDED_BY(state_mu_) = false;
  absl::CondVar stop_cv_;
  std::thread thread_;
};

}  // namespace ppn::ledger
