#include "fleet/vm_watch.h"

#include "common/rpc_log.h"
#include "common/vm_spec.h"

namespace ppn::fleet {

// One WatchVm stream. Its gRPC operations are started outside its lock: gRPC runs the
// reactions (OnWriteDone, OnCancel, OnDone) on its own threads, never inside the call.
class WatchHub::VmWatch final : public grpc::ServerWriteReactor<v1::WatchVmResponse> {
 public:
  VmWatch(WatchHub* hub, Scope scope, std::string vm_id)
      : hub_(hub), scope_(std::move(scope)), vm_id_(std::move(vm_id)) {}

  // Sends the record if it changed since the last write and no write is in flight.
  void Wake() {
    enum class Op { kNone, kWrite, kWriteAndFinish, kFinish } op = Op::kNone;
    grpc::Status status;
    {
      absl::MutexLock l(&mu_);
      if (finished_) return;
      if (writing_) {
        dirty_ = true;
        return;
      }
      absl::StatusOr<v1::VmRecord> vm = hub_->core_->GetVm(scope_, vm_id_);
      if (!vm.ok()) {
        finished_ = true;
        op = Op::kFinish;
        status = RpcFailed("WatchVm", vm.status(), {{"vm", vm_id_.substr(0, 64)}});
      } else {
        // Traffic counters move with every heartbeat: they ride along with a change, but are
        // not one.
        v1::VmRecord compared = *vm;
        compared.clear_network();
        std::string now = compared.SerializeAsString();
        if (now == last_) return;
        last_ = std::move(now);
        *msg_.mutable_vm() = *std::move(vm);
        *msg_.mutable_observe_time() = ToProtoTimestamp(absl::Now());
        if (msg_.vm().state() == ppn::types::v1::VM_STATE_STOPPED) {
          finished_ = true;
          op = Op::kWriteAndFinish;
        } else {
          writing_ = true;
          op = Op::kWrite;
        }
      }
    }
    switch (op) {
      case Op::kWrite: StartWrite(&msg_); break;
      case Op::kWriteAndFinish: StartWriteAndFinish(&msg_, grpc::WriteOptions(), grpc::Status::OK); break;
      case Op::kFinish: Finish(status); break;
      case Op::kNone: break;
    }
  }

  void OnWriteDone(bool ok) override {
    bool finish = false, again = false;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ok && !finished_) {
        finished_ = true;  // the stream broke: nobody is listening any more
        finish = true;
      }
      again = ok && dirty_;
      dirty_ = false;
    }
    if (finish) Finish(grpc::Status::OK);
    if (again) Wake();
  }

  void OnCancel() override {
    {
      absl::MutexLock l(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    hub_->Remove(this);
    delete this;
  }

 private:
  WatchHub* const hub_;
  const Scope scope_;
  const std::string vm_id_;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish (or WriteAndFinish) was started
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;  // woken during a write
  std::string last_ ABSL_GUARDED_BY(mu_);    // the record last sent, serialized
  v1::WatchVmResponse msg_;                  // the message in flight; untouched while writing_
};

WatchHub::WatchHub(FleetCore* core) : core_(core) {
  thread_ = std::thread([this] { Loop(); });
}

WatchHub::~WatchHub() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

grpc::ServerWriteReactor<v1::WatchVmResponse>* WatchHub::Watch(Scope scope, std::string vm_id) {
  auto* watch = new VmWatch(this, std::move(scope), std::move(vm_id));
  {
    absl::MutexLock l(&mu_);
    watches_.insert(watch);
  }
  watch->Wake();  // the record now (or NOT_FOUND)
  return watch;
}

size_t WatchHub::size() {
  absl::MutexLock l(&mu_);
  return watches_.size();
}

void WatchHub::Remove(VmWatch* watch) {
  absl::MutexLock l(&mu_);
  watches_.erase(watch);
}

void WatchHub::Loop() {
  uint64_t version = core_->version();
  while (true) {
    // Bounded, so that a stopping hub notices within this.
    uint64_t now = core_->WaitForChange(version, absl::Milliseconds(200));
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    if (now == version) continue;
    version = now;
    for (VmWatch* watch : watches_) watch->Wake();
  }
}

}  // namespace ppn::fleet
