#include "ledger/mirror.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "ledger/entry_codec.h"
#include "ledger/merkle.h"
#include "ledger/signed_note.h"
#include "spdlog/spdlog.h"

namespace ppn::ledger {
namespace {

// The tree of the store's first `base` leaves followed by `added` leaf hashes, before any of
// them is written: subtrees inside the stored prefix come from the store, the others are
// combined from their children (memoized), so the root is computed over the mirror's own copy.
class ExtendedTree final : public SubtreeSource {
 public:
  ExtendedTree(SubtreeSource* stored, uint64_t base, const std::vector<Hash>* added)
      : stored_(stored), base_(base), added_(added) {}

  absl::StatusOr<Hash> PerfectSubtree(int level, uint64_t index) override {
    const uint64_t begin = index << level, end = begin + (uint64_t{1} << level);
    if (end <= base_) return stored_->PerfectSubtree(level, index);
    if (end > base_ + added_->size()) return absl::NotFoundError("subtree not complete");
    if (level == 0) return (*added_)[begin - base_];
    auto key = std::make_pair(level, index);
    auto it = memo_.find(key);
    if (it != memo_.end()) return it->second;
    PPN_ASSIGN_OR_RETURN(Hash left, PerfectSubtree(level - 1, 2 * index));
    PPN_ASSIGN_OR_RETURN(Hash right, PerfectSubtree(level - 1, 2 * index + 1));
    Hash hash = HashChildren(left, right);
    memo_.emplace(key, hash);
    return hash;
  }

 private:
  SubtreeSource* const stored_;
  const uint64_t base_;
  const std::vector<Hash>* const added_;
  std::map<std::pair<int, uint64_t>, Hash> memo_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LedgerMirror>> LedgerMirror::Open(const std::string& path, LedgerSource* source,
                                                                 Options options) {
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<LedgerStore> store, LedgerStore::Open(path));
  PPN_ASSIGN_OR_RETURN(std::optional<std::string> key, store->GetMeta("verifier_key"));
  PPN_ASSIGN_OR_RETURN(std::optional<std::string> origin, store->GetMeta("origin"));
  if (key.has_value() && !options.verifier_key.empty() && *key != options.verifier_key) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ledger mirror ", path, " follows the ledger of key ", *key, ", not ", options.verifier_key));
  }
  if (options.page_size <= 0 || options.page_size > 1000) options.page_size = 1000;
  std::unique_ptr<LedgerMirror> mirror(new LedgerMirror(std::move(store), source, std::move(options)));
  absl::MutexLock l(&mirror->sync_mu_);
  mirror->verifier_key_ = key.value_or(mirror->options_.verifier_key);
  mirror->origin_ = origin.value_or("");
  PPN_ASSIGN_OR_RETURN(std::optional<StoredCheckpoint> latest, mirror->store_->LatestCheckpoint());
  if (latest.has_value()) {
    absl::MutexLock s(&mirror->state_mu_);
    mirror->latest_note_ = latest->note;
  }
  return mirror;
}

LedgerMirror::LedgerMirror(std::unique_ptr<LedgerStore> store, LedgerSource* source, Options options)
    : store_(std::move(store)), source_(source), options_(std::move(options)) {}

LedgerMirror::~LedgerMirror() { Stop(); }

std::string LedgerMirror::LatestCheckpointNote() const {
  absl::MutexLock l(&state_mu_);
  return latest_note_;
}

std::string LedgerMirror::Warning() const {
  absl::MutexLock l(&state_mu_);
  return warning_;
}

absl::Status LedgerMirror::Refuse(const std::string& why) {
  std::string warning = absl::StrCat("ledger mirror refused the ledger's state: ", why, "; keeping the copy of ",
                                     store_->size(), " verified entries");
  absl::MutexLock l(&state_mu_);
  // Once per new reason, not on every round of the loop.
  if (warning != warning_) spdlog::error("ledger_mirror.refused entries={} reason={}", store_->size(), why);
  warning_ = warning;
  return absl::DataLossError(warning);
}

absl::Status LedgerMirror::SyncOnce() {
  absl::MutexLock l(&sync_mu_);
  absl::Status status = Sync();
  if (status.ok()) {
    absl::MutexLock s(&state_mu_);
    warning_.clear();
  }
  return status;
}

absl::Status LedgerMirror::Sync() {
  PPN_ASSIGN_OR_RETURN(ppn::ledger::v1::GetCheckpointResponse fetched, source_->GetCheckpoint());

  // 1. The signature, with the pinned key (or the first one seen, pinned from now on).
  const bool first_use = verifier_key_.empty();
  const std::string key = first_use ? fetched.verifier_key() : verifier_key_;
  absl::StatusOr<NoteVerifier> verifier = ParseVerifierKey(key);
  if (!verifier.ok()) return Refuse(absl::StrCat("the ledger's verifier key: ", verifier.status().message()));
  std::string text;
  if (OpenNote(*verifier, fetched.signed_note(), &text) != NoteVerdict::kVerified) {
    return Refuse(absl::StrCat("the checkpoint's signature does not verify with the ledger key ", key));
  }
  absl::StatusOr<Checkpoint> checkpoint = ParseCheckpoint(text);
  if (!checkpoint.ok()) return Refuse(absl::StrCat("malformed checkpoint: ", checkpoint.status().message()));
  if (!origin_.empty() && checkpoint->origin != origin_) {
    return Refuse(absl::StrCat("the checkpoint's origin is ", checkpoint->origin, ", not ", origin_));
  }
  const uint64_t local = store_->size(), target = checkpoint->size;
  if (target < local) {
    return Refuse(absl::StrCat("the ledger's checkpoint is at size ", target, " but this mirror holds ", local,
                               " entries (a truncated or rolled-back ledger)"));
  }

  // 2. The new entries, each checked against its own hash.
  std::vector<NewLeaf> leaves;
  std::vector<Hash> hashes;
  while (local + leaves.size() < target) {
    const uint64_t want = local + leaves.size();
    PPN_ASSIGN_OR_RETURN(ppn::ledger::v1::GetEntriesResponse page, source_->GetEntries(want, options_.page_size));
    if (page.entries().empty()) {
      return absl::UnavailableError(
          absl::StrCat("the ledger returned no entry at index ", want, " below its size ", target));
    }
    for (const ppn::ledger::v1::Entry& entry : page.entries()) {
      const uint64_t index = local + leaves.size();
      if (index == target) break;
      if (entry.index() != index) {
        return Refuse(absl::StrCat("asked for entry ", index, ", the ledger sent entry ", entry.index()));
      }
      std::string leaf = EncodeLeaf(entry);
      Hash hash = HashLeaf(leaf);
      if (hash != entry.leaf_hash())
        return Refuse(absl::StrCat("entry ", index, "'s hash does not match its contents"));
      leaves.push_back({std::move(leaf), entry.kind(), ""});
      hashes.push_back(std::move(hash));
    }
  }

  // 3. The root over the mirror's own copy at that size is the signed one.
  ExtendedTree tree(store_.get(), local, &hashes);
  PPN_ASSIGN_OR_RETURN(Hash root, RootHash(tree, target));
  if (root != checkpoint->root_hash) {
    return Refuse(absl::StrCat("the root of the mirror's copy at size ", target,
                               " differs from the ledger's signed checkpoint (a rewritten history)"));
  }

  // 4. Consistent with the last accepted checkpoint, which is the mirror's own size.
  if (local > 0 && target > local) {
    PPN_ASSIGN_OR_RETURN(Hash old_root, RootHash(*store_, local));
    PPN_ASSIGN_OR_RETURN(std::vector<Hash> proof, source_->GetConsistencyProof(local, target));
    absl::Status consistent = VerifyConsistency(local, target, old_root, checkpoint->root_hash, proof);
    if (!consistent.ok()) {
      return Refuse(absl::StrCat("the ledger's consistency proof from size ", local, " to ", target,
                                 " does not verify: ", consistent.message()));
    }
  }

  if (first_use) {
    // Pinned before the first entries: the `ledger` binary checks this key when serving the file.
    PPN_RETURN_IF_ERROR(store_->PutMeta("verifier_key", key));
    PPN_RETURN_IF_ERROR(store_->PutMeta("origin", checkpoint->origin));
    verifier_key_ = key;
    origin_ = checkpoint->origin;
    spdlog::info("ledger_mirror.pinned verifier_key={} origin={}", key, checkpoint->origin);
  }
  StoredCheckpoint stored{target, fetched.signed_note()};
  if (leaves.empty()) {
    PPN_RETURN_IF_ERROR(store_->AddCheckpoint(stored));
  } else {
    PPN_RETURN_IF_ERROR(store_->Append(leaves, &stored).status());
    spdlog::info("ledger_mirror.synced entries={} added={}", target, leaves.size());
  }
  absl::MutexLock s(&state_mu_);
  latest_note_ = fetched.signed_note();
  return absl::OkStatus();
}

void LedgerMirror::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void LedgerMirror::Stop() {
  {
    absl::MutexLock l(&state_mu_);
    stopping_ = true;
    stop_cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void LedgerMirror::Loop() {
  bool reachable = true;
  while (true) {
    absl::Status status = SyncOnce();
    if (!status.ok() && status.code() != absl::StatusCode::kDataLoss) {
      // The founding node restarting is normal: say so once, not on every round.
      if (reachable) spdlog::warn("ledger_mirror.unreachable error={}", std::string(status.message()));
      reachable = false;
    } else if (status.ok()) {
      reachable = true;
    }
    absl::MutexLock l(&state_mu_);
    absl::Time until = absl::Now() + options_.interval;
    while (!stopping_ && !stop_cv_.WaitWithDeadline(&state_mu_, until)) {
    }
    if (stopping_) return;
  }
}

}  // namespace ppn::ledger
