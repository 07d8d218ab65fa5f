#include "mesh/grpc_membership_source.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"

namespace ppn::mesh {

void GrpcMembershipSource::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void GrpcMembershipSource::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

bool GrpcMembershipSource::Ready() const { return stopping_ || !queue_.empty() || caught_up_ != caught_up_reported_; }

absl::StatusOr<MembershipBatch> GrpcMembershipSource::Next(absl::Duration wait) {
  absl::MutexLock l(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(this, &GrpcMembershipSource::Ready), wait);
  MembershipBatch batch;
  while (!queue_.empty()) {
    batch.entries.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  caught_up_reported_ = caught_up_;
  batch.caught_up = caught_up_;
  if (batch.entries.empty() && !error_.ok()) return error_;
  return batch;
}

void GrpcMembershipSource::Loop() {
  auto stub = ppn::ledger::v1::Ledger::NewStub(channel_);
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    grpc::ClientContext ctx;
    grpc::ClientContext cp_ctx;
    cp_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    uint64_t start = 0;
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      ctx_ = &cp_ctx;
      start = next_index_;
    }
    // The checkpoint says how far the first catch-up goes; on a reconnect it proves the
    // ledger answers (a stream says nothing until its first entry).
    ppn::ledger::v1::GetCheckpointResponse cp;
    grpc::Status s = stub->GetCheckpoint(&cp_ctx, {}, &cp);
    {
      absl::MutexLock l(&mu_);
      ctx_ = nullptr;
      if (stopping_) return;
      if (s.ok()) {
        ctx_ = &ctx;
        error_ = absl::OkStatus();
        if (catch_up_to_ < 0) catch_up_to_ = static_cast<int64_t>(cp.tree_size());
        if (static_cast<int64_t>(next_index_) >= catch_up_to_) caught_up_ = true;
      }
    }
    if (s.ok()) {
      ppn::ledger::v1::WatchEntriesRequest req;
      req.set_start_index(start);
      auto reader = stub->WatchEntries(&ctx, req);
      ppn::ledger::v1::WatchEntriesResponse msg;
      while (reader->Read(&msg)) {
        absl::MutexLock l(&mu_);
        error_ = absl::OkStatus();
        backoff = absl::Milliseconds(200);
        if (msg.entry().index() < next_index_) continue;  // never hand out an entry twice
        next_index_ = msg.entry().index() + 1;
        if (absl::StartsWith(msg.entry().kind(), "node.")) queue_.push_back(std::move(*msg.mutable_entry()));
        if (!caught_up_ && static_cast<int64_t>(next_index_) >= catch_up_to_) caught_up_ = true;
      }
      s = reader->Finish();
    }
    absl::MutexLock l(&mu_);
    ctx_ = nullptr;
    if (stopping_) return;
    error_ = absl::UnavailableError(absl::StrCat("the ledger's membership stream is down (code ",
                                                 static_cast<int>(s.error_code()), "): ", s.error_message(),
                                                 "; resuming at index ", next_index_));
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff)) return;
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace ppn::mesh
