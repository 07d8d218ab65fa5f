#pragma once

// LedgerStore keeps the log in SQLite: canonical leaves, every complete perfect subtree hash
// (so a proof costs O(log n) point reads) and signed checkpoints. The schema refuses UPDATE
// and DELETE on all three tables. Thread-safe: one connection for the single writer, another
// for concurrent readers (WAL lets them read while a batch commits).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/sqlite.h"
#include "ledger/merkle.h"

namespace ppn::ledger {

// One leaf to append.
struct NewLeaf {
  std::string leaf;             // canonical entry bytes
  std::string kind;             // entry kind, kept beside the leaf for filtering
  std::string idempotency_key;  // empty for none; unique over the log
};

struct StoredLeaf {
  uint64_t index = 0;
  std::string leaf;
};

struct StoredCheckpoint {
  uint64_t tree_size = 0;
  std::string note;  // signed note text
};

class LedgerStore final : public SubtreeSource {
 public:
  static absl::StatusOr<std::unique_ptr<LedgerStore>> Open(const std::string& path);

  // Entries committed so far.
  uint64_t size() const;

  // Appends `leaves` (and the subtree hashes they complete) in one durable transaction.
  // Returns the index of the first. On error nothing is appended. With `checkpoint`, it is
  // stored in the same transaction (a mirror never holds entries its checkpoint does not cover).
  absl::StatusOr<uint64_t> Append(const std::vector<NewLeaf>& leaves, const StoredCheckpoint* checkpoint = nullptr);

  // The index holding `idempotency_key`, if any.
  absl::StatusOr<std::optional<uint64_t>> FindIdempotencyKey(const std::string& key);

  // Up to `limit` leaves from `start` on, of `kind` only unless empty.
  absl::StatusOr<std::vector<StoredLeaf>> ReadLeaves(uint64_t start, int limit, const std::string& kind);

  absl::StatusOr<Hash> PerfectSubtree(int level, uint64_t index) override;

  // Stores a checkpoint; one per tree size (a second for the same size is ignored).
  absl::Status AddCheckpoint(const StoredCheckpoint& checkpoint);
  absl::StatusOr<std::optional<StoredCheckpoint>> LatestCheckpoint();

  // Key/value metadata (the verifier key, the origin).
  absl::Status PutMeta(const std::string& key, const std::string& value);
  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key);

  // The schema, shared with the offline verifier.
  static const std::vector<std::string>& Schema();

 private:
  LedgerStore() = default;
  absl::Status LoadFrontier() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  mutable absl::Mutex write_mu_;
  std::unique_ptr<Database> writer_ ABSL_GUARDED_BY(write_mu_);
  // The last complete node at each level: the left siblings the next appends combine with.
  std::vector<Hash> frontier_ ABSL_GUARDED_BY(write_mu_);

  mutable absl::Mutex read_mu_;
  std::unique_ptr<Database> reader_ ABSL_GUARDED_BY(read_mu_);
  std::optional<Statement> read_node_ ABSL_GUARDED_BY(read_mu_);

  mutable absl::Mutex size_mu_;
  uint64_t size_ ABSL_GUARDED_BY(size_mu_) = 0;
};

}  // namespace ppn::ledger
