#include "ledger/ledger_service.h"

#include "common/grpc_status.h"
#include "common/peer_identity.h"
#include "common/rpc_log.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace ppn::ledger {
namespace {

using google::protobuf::util::TimeUtil;

// Logs a failed call once, with its code, and converts it.
}  // namespace

grpc::Status LedgerService::Append(grpc::ServerContext* context, const v1::AppendRequest* request,
                                   v1::AppendResponse* response) {
  absl::StatusOr<SpiffeId> peer = PeerSpiffeId(*context);
  if (!peer.ok()) return RpcFailed("Append", peer.status());
  absl::StatusOr<AppendResult> result = log_->Append(*peer, *request);
  if (!result.ok()) return RpcFailed("Append", result.status());
  response->set_index(result->index);
  response->set_leaf_hash(result->leaf_hash);
  *response->mutable_append_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(result->append_time));
  response->set_duplicate(result->duplicate);
  spdlog::debug("ledger.appended kind={} index={} actor={} duplicate={}", request->kind(), result->index,
                peer->ToString(), result->duplicate);
  return grpc::Status::OK;
}

grpc::Status LedgerService::AppendBatch(grpc::ServerContext* context, const v1::AppendBatchRequest* request,
                                        v1::AppendBatchResponse* response) {
  absl::StatusOr<SpiffeId> peer = PeerSpiffeId(*context);
  if (!peer.ok()) return RpcFailed("AppendBatch", peer.status());
  std::vector<v1::AppendRequest> entries(request->entries().begin(), request->entries().end());
  absl::StatusOr<std::vector<AppendResult>> results = log_->AppendBatch(*peer, entries);
  if (!results.ok()) return RpcFailed("AppendBatch", results.status());
  for (const AppendResult& r : *results) {
    auto* out = response->add_results();
    out->set_index(r.index);
    out->set_leaf_hash(r.leaf_hash);
    *out->mutable_append_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(r.append_time));
    out->set_duplicate(r.duplicate);
  }
  return grpc::Status::OK;
}

grpc::Status LedgerService::GetEntries(grpc::ServerContext*, const v1::GetEntriesRequest* request,
                                       v1::GetEntriesResponse* response) {
  uint64_t size = log_->size();
  absl::StatusOr<std::vector<v1::Entry>> entries =
      log_->GetEntries(request->start_index(), request->page_size(), request->kind());
  if (!entries.ok()) return RpcFailed("GetEntries", entries.status());
  for (auto& e : *entries) *response->add_entries() = std::move(e);
  response->set_next_index(response->entries().empty() ? std::max<uint64_t>(request->start_index(), size)
                                                       : response->entries().rbegin()->index() + 1);
  return grpc::Status::OK;
}

grpc::Status LedgerService::GetCheckpoint(grpc::ServerContext*, const v1::GetCheckpointRequest*,
                                          v1::GetCheckpointResponse* response) {
  absl::StatusOr<SignedCheckpoint> c = log_->Checkpoint();
  if (!c.ok()) return RpcFailed("GetCheckpoint", c.status());
  response->set_signed_note(c->note);
  response->set_tree_size(c->tree_size);
  response->set_root_hash(c->root_hash);
  response->set_verifier_key(c->verifier_key);
  return grpc::Status::OK;
}

grpc::Status LedgerService::GetInclusionProof(grpc::ServerContext*, const v1::GetInclusionProofRequest* request,
                                              v1::GetInclusionProofResponse* response) {
  absl::StatusOr<InclusionProofResult> proof = log_->ProveInclusion(request->leaf_index(), request->tree_size());
  if (!proof.ok()) return RpcFailed("GetInclusionProof", proof.status());
  response->set_leaf_index(request->leaf_index());
  response->set_tree_size(proof->tree_size);
  for (const Hash& h : proof->path) response->add_hashes(h);
  response->set_leaf_hash(proof->leaf_hash);
  response->set_root_hash(proof->root_hash);
  return grpc::Status::OK;
}

grpc::Status LedgerService::GetConsistencyProof(grpc::ServerContext*, const v1::GetConsistencyProofRequest* request,
                                                v1::GetConsistencyProofResponse* response) {
  uint64_t size2 = request->second_tree_size() == 0 ? log_->size() : request->second_tree_size();
  absl::StatusOr<std::vector<Hash>> proof = log_->ProveConsistency(request->first_tree_size(), size2);
  if (!proof.ok()) return RpcFailed("GetConsistencyProof", proof.status());
  response->set_first_tree_size(request->first_tree_size());
  response->set_second_tree_size(size2);
  for (const Hash& h : *proof) response->add_hashes(h);
  return grpc::Status::OK;
}

grpc::Status LedgerService::WatchEntries(grpc::ServerContext* context, const v1::WatchEntriesRequest* request,
                                         grpc::ServerWriter<v1::WatchEntriesResponse>* writer) {
  uint64_t next = request->start_index();
  while (!context->IsCancelled()) {
    uint64_t size = log_->size();
    if (next >= size) {
      // Wake at least every 200 ms to notice a cancelled stream.
      log_->WaitForGrowth(size, absl::Milliseconds(200));
      continue;
    }
    absl::StatusOr<std::vector<v1::Entry>> entries = log_->GetEntries(next, 500, request->kind());
    if (!entries.ok()) return RpcFailed("WatchEntries", entries.status());
    if (entries->empty()) {
      next = size;  // nothing of this kind up to size
      continue;
    }
    for (auto& e : *entries) {
      next = e.index() + 1;
      v1::WatchEntriesResponse msg;
      *msg.mutable_entry() = std::move(e);
      if (!writer->Write(msg)) return grpc::Status::OK;  // the client went away
    }
  }
  return grpc::Status::OK;
}

}  // namespace ppn::ledger
