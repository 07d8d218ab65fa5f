#include "fleet/heartbeat_watcher.h"

#include "common/vm_spec.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {

void HeartbeatWatcher::Start() {
  loop_ = std::thread([this] { Loop(); });
}

void HeartbeatWatcher::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [_, ctx] : contexts_) ctx->TryCancel();
  }
  if (loop_.joinable()) loop_.join();
  std::map<std::string, std::thread> watchers;
  {
    absl::MutexLock l(&mu_);
    watchers.swap(watchers_);
  }
  for (auto& [_, t] : watchers) t.join();
}

void HeartbeatWatcher::Loop() {
  // Run the periodic pass a few times per interval, and pick up nodes added meanwhile.
  absl::Duration tick = std::max(absl::Milliseconds(50), interval_ / 4);
  while (true) {
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      for (const auto& [id, address] : core_->NodeAddresses()) {
        if (watchers_.count(id) == 0) {
          watchers_[id] = std::thread([this, id = id, address = address] { WatchNode(id, address); });
        }
      }
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), tick)) return;
    }
    core_->RunOnce();
  }
}

void HeartbeatWatcher::WatchNode(const std::string& node_id, const std::string& address) {
  auto stub = ppn::host::v1::HostAgent::NewStub(channels_->Channel(address));
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    grpc::ClientContext ctx;
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      contexts_[node_id] = &ctx;
    }
    ppn::host::v1::WatchHeartbeatsRequest req;
    *req.mutable_interval() = ToProtoDuration(interval_);
    auto reader = stub->WatchHeartbeats(&ctx, req);
    ppn::host::v1::Heartbeat hb;
    bool any = false;
    while (reader->Read(&hb)) {
      if (hb.node_id() != node_id) {
        // A node answering under another name is misconfigured: trust nothing it says.
        spdlog::error("node.mismatch expected={} reported={} agent={}", node_id, hb.node_id(), address);
        ctx.TryCancel();
        break;
      }
      any = true;
      backoff = absl::Milliseconds(200);
      core_->OnHeartbeat(hb);
    }
    grpc::Status s = reader->Finish();
    {
      absl::MutexLock l(&mu_);
      contexts_.erase(node_id);
      if (stopping_) return;
      if (any) spdlog::warn("node.stream_broken node={} code={}", node_id, static_cast<int>(s.error_code()));
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff)) return;
    }
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace ppn::fleet
