#include "fleet/ledger_node_watcher.h"

#include "common/rpc_interceptors.h"
#include "grpcpp/create_channel.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {

void LedgerNodeWatcher::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void LedgerNodeWatcher::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void LedgerNodeWatcher::Loop() {
  auto stub = ppn::ledger::v1::Ledger::NewStub(ppn::MeshChannel(address_, MtlsChannelCredentials(tls_)));
  uint64_t next = 0;
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    grpc::ClientContext ctx;
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      ctx_ = &ctx;
    }
    ppn::ledger::v1::WatchEntriesRequest req;
    req.set_start_index(next);
    auto reader = stub->WatchEntries(&ctx, req);
    ppn::ledger::v1::WatchEntriesResponse msg;
    while (reader->Read(&msg)) {
      const auto& e = msg.entry();
      next = e.index() + 1;
      backoff = absl::Milliseconds(200);
      if (e.outcome() != ppn::ledger::v1::OUTCOME_SUCCESS) continue;
      if (e.kind() == "node.join") {
        auto addr = e.attributes().find("agent_address");
        if (addr == e.attributes().end() || e.subject().empty()) {
          spdlog::warn("ledger.node_join_incomplete index={}", e.index());
          continue;
        }
        core_->AddNode(e.subject(), addr->second);
      } else if (e.kind() == "node.revoke") {
        core_->RevokeNode(e.subject());
      }
    }
    grpc::Status s = reader->Finish();
    absl::MutexLock l(&mu_);
    ctx_ = nullptr;
    if (stopping_) return;
    spdlog::warn("ledger.stream_broken code={} resume_at={}", static_cast<int>(s.error_code()), next);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff)) return;
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace ppn::fleet
