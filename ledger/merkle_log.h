#pragma once

// MerkleLog is the ledger's core: validated, durable, group-committed appends; entries;
// signed checkpoints; proofs; and a way to wait for new entries. Pure C++ (protos as data).
// Thread-safe. `*store` and `*clock` must outlive it.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/spiffe_id.h"
#include "ledger/append_policy.h"
#include "ledger/ledger_store.h"
#include "ledger/signed_note.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::ledger {

struct AppendResult {
  uint64_t index = 0;
  Hash leaf_hash;
  absl::Time append_time;
  bool duplicate = false;
};

struct SignedCheckpoint {
  std::string note;
  uint64_t tree_size = 0;
  Hash root_hash;
  std::string verifier_key;
};

struct InclusionProofResult {
  uint64_t tree_size = 0;
  Hash leaf_hash;
  Hash root_hash;
  std::vector<Hash> path;
};

class MerkleLog {
 public:
  struct Options {
    // Checkpoint origin line, e.g. "ppn.local/ledger".
    std::string origin;
    // A new checkpoint is signed after a commit when the last is at least this old.
    absl::Duration checkpoint_interval = absl::Seconds(1);
    // Most entries committed in one transaction.
    size_t max_batch = 2048;
    AppendPolicy policy = AppendPolicy::Default();
  };

  MerkleLog(LedgerStore* store, NoteSigner signer, Clock* clock, Options options);
  ~MerkleLog();  // stops the writer after committing what was queued

  // Starts the writer thread and signs a checkpoint if entries are not yet covered by one.
  absl::Status Start();
  // Commits what is queued, signs a final checkpoint, stops the writer. Idempotent.
  void Stop();

  // Appends an entry for `actor` once it is durable. INVALID_ARGUMENT for a bad request,
  // PERMISSION_DENIED if the actor's role may not append the kind, UNAVAILABLE when stopped.
  absl::StatusOr<AppendResult> Append(const SpiffeId& actor, const ppn::ledger::v1::AppendRequest& request);

  // Appends `requests` in order once all are durable; all are validated first, so a refused
  // one (INVALID_ARGUMENT, PERMISSION_DENIED) means none is appended.
  absl::StatusOr<std::vector<AppendResult>> AppendBatch(const SpiffeId& actor,
                                                        const std::vector<ppn::ledger::v1::AppendRequest>& requests);

  // Up to `page_size` entries from `start` on (of `kind` unless empty).
  absl::StatusOr<std::vector<ppn::ledger::v1::Entry>> GetEntries(uint64_t start, int page_size,
                                                                 const std::string& kind);

  // The checkpoint for the current size, signing a new one if the tree grew.
  absl::StatusOr<SignedCheckpoint> Checkpoint();

  // tree_size 0 means the current size. INVALID_ARGUMENT if out of range.
  absl::StatusOr<InclusionProofResult> ProveInclusion(uint64_t index, uint64_t tree_size);
  absl::StatusOr<std::vector<Hash>> ProveConsistency(uint64_t size1, uint64_t size2);

  // Blocks until the log has more than `size` entries or `timeout` passes; returns the size.
  uint64_t WaitForGrowth(uint64_t size, absl::Duration timeout);

  uint64_t size() const { return store_->size(); }
  std::string VerifierKey() const { return signer_.VerifierKey(); }

 private:
  struct Pending;
  absl::StatusOr<std::shared_ptr<Pending>> MakePending(const SpiffeId& actor,
                                                       const ppn::ledger::v1::AppendRequest& request);
  void WriterLoop();
  void CommitBatch(std::vector<std::shared_ptr<Pending>>& batch);
  absl::StatusOr<SignedCheckpoint> SignCheckpoint(uint64_t size);

  LedgerStore* const store_;
  const NoteSigner signer_;
  Clock* const clock_;
  const Options options_;

  absl::Mutex mu_;
  absl::CondVar work_cv_;  // writer: something queued or stopping
  absl::CondVar done_cv_;  // appenders and watchers: a batch committed
  std::deque<std::shared_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;

  absl::Mutex checkpoint_mu_;
  absl::Time last_checkpoint_time_ ABSL_GUARDED_BY(checkpoint_mu_) = absl::InfinitePast();
  std::optional<SignedCheckpoint> latest_ ABSL_GUARDED_BY(checkpoint_mu_);
};

}  // namespace ppn::ledger
