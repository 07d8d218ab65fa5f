#include "ledger/merkle_log.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "ledger/entry_codec.h"

namespace ppn::ledger {
namespace {

using ppn::ledger::v1::AppendRequest;
using ppn::ledger::v1::Entry;

constexpr size_t kMaxAttributes = 64;
constexpr size_t kMaxAttributeBytes = 4096;

absl::Status ValidateRequest(const AppendRequest& r) {
  PPN_RETURN_IF_ERROR(ValidateKind(r.kind()));
  if (r.outcome() == ppn::ledger::v1::OUTCOME_UNSPECIFIED || !ppn::ledger::v1::Outcome_IsValid(r.outcome())) {
    return absl::InvalidArgumentError("outcome must be SUCCESS, FAILURE or DENIED");
  }
  if (r.tenant_id().size() > 128) return absl::InvalidArgumentError("tenant_id longer than 128");
  if (r.subject().size() > 256) return absl::InvalidArgumentError("subject longer than 256");
  if (r.idempotency_key().size() > 128) {
    return absl::InvalidArgumentError("idempotency_key longer than 128");
  }
  if (r.attributes_size() > static_cast<int>(kMaxAttributes)) {
    return absl::InvalidArgumentError(absl::StrCat("more than ", kMaxAttributes, " attributes"));
  }
  size_t bytes = 0;
  for (const auto& [k, v] : r.attributes()) bytes += k.size() + v.size();
  if (bytes > kMaxAttributeBytes) {
    return absl::InvalidArgumentError(absl::StrCat("attributes exceed ", kMaxAttributeBytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

struct MerkleLog::Pending {
  Entry entry;             // without time, index and hash
  std::string scoped_key;  // actor-scoped idempotency key, empty for none
  bool done = false;       // guarded by MerkleLog::mu_
  absl::StatusOr<AppendResult> result = absl::UnknownError("not committed");
};

MerkleLog::MerkleLog(LedgerStore* store, NoteSigner signer, Clock* clock, Options options)
    : store_(store), signer_(std::move(signer)), clock_(clock), options_(std::move(options)) {}

MerkleLog::~MerkleLog() { Stop(); }

absl::Status MerkleLog::Start() {
  PPN_ASSIGN_OR_RETURN(std::optional<StoredCheckpoint> stored, store_->LatestCheckpoint());
  PPN_ASSIGN_OR_RETURN(std::optional<std::string> key, store_->GetMeta("verifier_key"));
  if (!key.has_value()) {
    PPN_RETURN_IF_ERROR(store_->PutMeta("verifier_key", signer_.VerifierKey()));
    PPN_RETURN_IF_ERROR(store_->PutMeta("origin", options_.origin));
  } else if (*key != signer_.VerifierKey()) {
    return absl::FailedPreconditionError(absl::StrCat("this ledger file was signed by key ", *key,
                                                      " but the configured signing key is ", signer_.VerifierKey()));
  }
  {
    absl::MutexLock l(&checkpoint_mu_);
    if (stored.has_value()) {
      std::string body = stored->note.substr(0, stored->note.rfind("\n\n") + 1);
      PPN_ASSIGN_OR_RETURN(struct Checkpoint parsed, ParseCheckpoint(body));
      latest_ = SignedCheckpoint{stored->note, parsed.size, parsed.root_hash, signer_.VerifierKey()};
    }
  }
  if (!stored.has_value() || stored->tree_size < store_->size()) {
    PPN_RETURN_IF_ERROR(Checkpoint().status());
  }
  absl::MutexLock l(&mu_);
  running_ = true;
  stopping_ = false;
  writer_ = std::thread([this] { WriterLoop(); });
  return absl::OkStatus();
}

void MerkleLog::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (!running_) return;
    stopping_ = true;
    work_cv_.Signal();
  }
  writer_.join();
  {
    absl::MutexLock l(&mu_);
    running_ = false;
    done_cv_.SignalAll();
  }
  Checkpoint().IgnoreError();
}

absl::StatusOr<std::shared_ptr<MerkleLog::Pending>> MerkleLog::MakePending(const SpiffeId& actor,
                                                                           const AppendRequest& request) {
  PPN_RETURN_IF_ERROR(ValidateRequest(request));
  PPN_RETURN_IF_ERROR(options_.policy.Check(actor.role, request.kind()));
  auto pending = std::make_shared<Pending>();
  Entry& e = pending->entry;
  e.set_kind(request.kind());
  e.set_actor(actor.ToString());
  e.set_tenant_id(request.tenant_id());
  e.set_subject(request.subject());
  e.set_outcome(request.outcome());
  *e.mutable_attributes() = request.attributes();
  if (!request.idempotency_key().empty()) {
    pending->scoped_key = absl::StrCat(actor.ToString(), "\n", request.idempotency_key());
  }
  return pending;
}

absl::StatusOr<AppendResult> MerkleLog::Append(const SpiffeId& actor, const AppendRequest& request) {
  PPN_ASSIGN_OR_RETURN(std::vector<AppendResult> results, AppendBatch(actor, {request}));
  return results[0];
}

absl::StatusOr<std::vector<AppendResult>> MerkleLog::AppendBatch(const SpiffeId& actor,
                                                                 const std::vector<AppendRequest>& requests) {
  if (requests.empty() || requests.size() > 1000) {
    return absl::InvalidArgumentError("a batch holds 1-1000 entries");
  }
  std::vector<std::shared_ptr<Pending>> pendings;
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::StatusOr<std::shared_ptr<Pending>> p = MakePending(actor, requests[i]);
    if (!p.ok()) {
      return requests.size() == 1
                 ? p.status()
                 : absl::Status(p.status().code(), absl::StrCat("entry ", i, ": ", p.status().message()));
    }
    pendings.push_back(*std::move(p));
  }
  absl::MutexLock l(&mu_);
  if (!running_ || stopping_) return absl::UnavailableError("ledger is shutting down");
  // Queued together, so the writer commits them in order (possibly with others in between).
  for (auto& p : pendings) queue_.push_back(p);
  work_cv_.Signal();
  std::vector<AppendResult> results;
  for (auto& p : pendings) {
    while (!p->done) done_cv_.Wait(&mu_);
    if (!p->result.ok()) return p->result.status();
    results.push_back(*p->result);
  }
  return results;
}

void MerkleLog::WriterLoop() {
  while (true) {
    std::vector<std::shared_ptr<Pending>> batch;
    {
      absl::MutexLock l(&mu_);
      while (queue_.empty() && !stopping_) work_cv_.Wait(&mu_);
      if (queue_.empty()) return;
      while (!queue_.empty() && batch.size() < options_.max_batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    CommitBatch(batch);
    bool due;
    {
      absl::MutexLock l(&checkpoint_mu_);
      due = clock_->Now() - last_checkpoint_time_ >= options_.checkpoint_interval;
    }
    if (due) Checkpoint().IgnoreError();
  }
}

void MerkleLog::CommitBatch(std::vector<std::shared_ptr<Pending>>& batch) {
  absl::Time now = clock_->Now();
  std::vector<NewLeaf> leaves;
  std::vector<size_t> leaf_of(batch.size(), SIZE_MAX);  // batch position -> leaf position
  std::map<std::string, size_t> keys_in_batch;          // scoped key -> leaf position
  std::vector<absl::StatusOr<AppendResult>> dup(batch.size(), absl::UnknownError(""));
  std::vector<bool> is_dup(batch.size(), false);
  for (size_t i = 0; i < batch.size(); ++i) {
    Pending& p = *batch[i];
    if (!p.scoped_key.empty()) {
      absl::StatusOr<std::optional<uint64_t>> found = store_->FindIdempotencyKey(p.scoped_key);
      if (!found.ok()) {
        is_dup[i] = true;
        dup[i] = found.status();
        continue;
      }
      if (found->has_value()) {
        absl::StatusOr<Hash> hash = store_->PerfectSubtree(0, **found);
        is_dup[i] = true;
        dup[i] = hash.ok() ? absl::StatusOr<AppendResult>(AppendResult{**found, *hash, now, true})
                           : absl::StatusOr<AppendResult>(hash.status());
        continue;
      }
      if (auto it = keys_in_batch.find(p.scoped_key); it != keys_in_batch.end()) {
        leaf_of[i] = it->second;
        is_dup[i] = true;  // resolved after commit, pointing at the first one
        continue;
      }
      keys_in_batch[p.scoped_key] = leaves.size();
    }
    *p.entry.mutable_append_time() = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(now));
    leaf_of[i] = leaves.size();
    leaves.push_back({EncodeLeaf(p.entry), p.entry.kind(), p.scoped_key});
  }
  absl::StatusOr<uint64_t> first = leaves.empty() ? absl::StatusOr<uint64_t>(store_->size()) : store_->Append(leaves);

  absl::MutexLock l(&mu_);
  for (size_t i = 0; i < batch.size(); ++i) {
    Pending& p = *batch[i];
    if (is_dup[i] && leaf_of[i] == SIZE_MAX) {
      p.result = dup[i];
    } else if (!first.ok()) {
      p.result = absl::Status(first.status().code(), absl::StrCat("append not stored: ", first.status().message()));
    } else {
      size_t pos = leaf_of[i];
      p.result = AppendResult{*first + pos, HashLeaf(leaves[pos].leaf), now, is_dup[i]};
    }
    p.done = true;
  }
  done_cv_.SignalAll();
}

absl::StatusOr<std::vector<Entry>> MerkleLog::GetEntries(uint64_t start, int page_size, const std::string& kind) {
  if (page_size < 0 || page_size > 1000) {
    return absl::InvalidArgumentError("page_size must be 0-1000");
  }
  if (page_size == 0) page_size = 100;
  if (!kind.empty()) PPN_RETURN_IF_ERROR(ValidateKind(kind));
  PPN_ASSIGN_OR_RETURN(std::vector<StoredLeaf> leaves, store_->ReadLeaves(start, page_size, kind));
  std::vector<Entry> out;
  out.reserve(leaves.size());
  for (StoredLeaf& leaf : leaves) {
    absl::StatusOr<Entry> entry = DecodeLeaf(leaf.leaf);
    if (!entry.ok()) {
      return absl::DataLossError(absl::StrCat("entry ", leaf.index, ": ", entry.status().message()));
    }
    entry->set_index(leaf.index);
    entry->set_leaf_hash(HashLeaf(leaf.leaf));
    out.push_back(*std::move(entry));
  }
  return out;
}

absl::StatusOr<SignedCheckpoint> MerkleLog::Checkpoint() {
  absl::MutexLock l(&checkpoint_mu_);
  uint64_t size = store_->size();
  if (latest_.has_value() && latest_->tree_size == size) return *latest_;
  PPN_ASSIGN_OR_RETURN(Hash root, RootHash(*store_, size));
  struct Checkpoint body {
    options_.origin, size, root, ""
  };
  PPN_ASSIGN_OR_RETURN(std::string note, signer_.Sign(MarshalCheckpoint(body)));
  PPN_RETURN_IF_ERROR(store_->AddCheckpoint({size, note}));
  latest_ = SignedCheckpoint{note, size, root, signer_.VerifierKey()};
  last_checkpoint_time_ = clock_->Now();
  return *latest_;
}

absl::StatusOr<InclusionProofResult> MerkleLog::ProveInclusion(uint64_t index, uint64_t tree_size) {
  uint64_t current = store_->size();
  if (tree_size == 0) tree_size = current;
  if (tree_size > current) {
    return absl::InvalidArgumentError(absl::StrCat("tree size ", tree_size, " is beyond the log's size ", current));
  }
  if (index >= tree_size) {
    return absl::InvalidArgumentError(absl::StrCat("leaf index ", index, " is not in a tree of size ", tree_size));
  }
  InclusionProofResult out;
  out.tree_size = tree_size;
  PPN_ASSIGN_OR_RETURN(out.leaf_hash, store_->PerfectSubtree(0, index));
  PPN_ASSIGN_OR_RETURN(out.root_hash, RootHash(*store_, tree_size));
  PPN_ASSIGN_OR_RETURN(out.path, InclusionProof(*store_, index, tree_size));
  return out;
}

absl::StatusOr<std::vector<Hash>> MerkleLog::ProveConsistency(uint64_t size1, uint64_t size2) {
  uint64_t current = store_->size();
  if (size2 == 0) size2 = current;
  if (size2 > current) {
    return absl::InvalidArgumentError(absl::StrCat("tree size ", size2, " is beyond the log's size ", current));
  }
  return ConsistencyProof(*store_, size1, size2);
}

uint64_t MerkleLog::WaitForGrowth(uint64_t size, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock l(&mu_);
  while (store_->size() <= size && running_) {
    if (done_cv_.WaitWithDeadline(&mu_, deadline)) break;
  }
  return store_->size();
}

}  // namespace ppn::ledger
