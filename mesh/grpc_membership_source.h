#pragma once

// GrpcMembershipSource reads the membership ledger over gRPC (the host role may read it):
// the ledger's checkpoint tells how far the catch-up goes, then WatchEntries from index 0
// streams the stored entries and each new one. A background thread keeps the stream open,
// reconnecting with backoff (200 ms doubling to 5 s) from the entry after the last one it
// received, and queues the `node.*` entries for Next. Thread-safe. Start/Stop.

#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "mesh/membership_source.h"

namespace ppn::mesh {

class GrpcMembershipSource final : public MembershipSource {
 public:
  // `channel` reaches the ledger with this node's mTLS identity.
  explicit GrpcMembershipSource(std::shared_ptr<grpc::Channel> channel) : channel_(std::move(channel)) {}
  ~GrpcMembershipSource() override { Stop(); }

  void Start();
  void Stop();
  absl::StatusOr<MembershipBatch> Next(absl::Duration wait) override;

 private:
  void Loop();
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<grpc::Channel> channel_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<ppn::ledger::v1::Entry> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t next_index_ ABSL_GUARDED_BY(mu_) = 0;   // the entry to ask for on reconnect
  int64_t catch_up_to_ ABSL_GUARDED_BY(mu_) = -1;  // tree size at the first checkpoint; -1 unknown
  bool caught_up_ ABSL_GUARDED_BY(mu_) = false;
  bool caught_up_reported_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_) = absl::UnavailableError("not connected to the ledger yet");
  std::thread thread_;
};

}  // namespace ppn::mesh
