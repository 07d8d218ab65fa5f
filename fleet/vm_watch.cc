#include "fleet/vm_watch.h"

#include "common/rpc_log.h"
#include "common/vm_spec.h"

namespace ppn::fleet {

// What the hub wakes.
class WatchHub::Stream {
 public:
  virtual ~Stream() = default;
  virtual void Wake() = 0;
};

// A stream of `Msg`s that sends its next one when woken. Its gRPC operations are started
// outside its lock: gRPC runs the reactions (OnWriteDone, OnCancel, OnDone) on its own
// threads, never inside the call.
template <typename Msg>
class WatchHub::StreamOf : public grpc::ServerWriteReactor<Msg>, public WatchHub::Stream {
 public:
  explicit StreamOf(WatchHub* hub) : hub_(hub) {}

  // Sends the next message, if there is one and no write is in flight.
  void Wake() override {
    Step step;
    grpc::Status status;
    {
      absl::MutexLock l(&mu_);
      if (finished_) return;
      if (writing_) {
        dirty_ = true;
        return;
      }
      step = Next(&msg_, &status);
      if (step == Step::kSend) writing_ = true;
      if (step == Step::kSendLast || step == Step::kFail) finished_ = true;
    }
    switch (step) {
      case Step::kSend: this->StartWrite(&msg_); break;
      case Step::kSendLast: this->StartWriteAndFinish(&msg_, grpc::WriteOptions(), grpc::Status::OK); break;
      case Step::kFail: this->Finish(status); break;
      case Step::kNothing: break;
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
    if (finish) this->Finish(grpc::Status::OK);
    if (again) Wake();
  }

  void OnCancel() override {
    {
      absl::MutexLock l(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    this->Finish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    hub_->Remove(this);
    delete this;
  }

 protected:
  enum class Step { kNothing, kSend, kSendLast, kFail };
  // Called under the stream's lock, never during a write: what to do now. Fills `msg` to send
  // (kSend, kSendLast: then OK), `status` to end with (kFail).
  virtual Step Next(Msg* msg, grpc::Status* status) = 0;

  WatchHub* const hub_;

 private:
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish (or WriteAndFinish) was started
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;  // woken during a write
  Msg msg_;                                  // the message in flight; untouched while writing_
};

// One WatchVm stream.
class WatchHub::VmWatch final : public WatchHub::StreamOf<v1::WatchVmResponse> {
 public:
  VmWatch(WatchHub* hub, Scope scope, std::string vm_id)
      : StreamOf(hub), scope_(std::move(scope)), vm_id_(std::move(vm_id)) {}

 private:
  Step Next(v1::WatchVmResponse* msg, grpc::Status* status) override {
    absl::StatusOr<v1::VmRecord> vm = hub_->core_->GetVm(scope_, vm_id_);
    if (!vm.ok()) {
      *status = RpcFailed("WatchVm", vm.status(), {{"vm", vm_id_.substr(0, 64)}});
      return Step::kFail;
    }
    // A name resolves once: the stream follows that VM, not a later one given the same name.
    vm_id_ = vm->vm_id();
    // Traffic counters move with every heartbeat: they ride along with a change, but are not
    // one.
    v1::VmRecord compared = *vm;
    compared.clear_network();
    std::string now = compared.SerializeAsString();
    if (now == last_) return Step::kNothing;
    last_ = std::move(now);
    *msg->mutable_vm() = *std::move(vm);
    *msg->mutable_observe_time() = ToProtoTimestamp(absl::Now());
    return msg->vm().state() == ppn::types::v1::VM_STATE_DESTROYED ? Step::kSendLast : Step::kSend;
  }

  const Scope scope_;
  std::string vm_id_;  // the id or name asked for, then the id it named; only Next touches it
  std::string last_;   // the record last sent, serialized; only Next touches it
};

// One WatchRelayRoutes stream.
class WatchHub::RelayWatch final : public WatchHub::StreamOf<v1::WatchRelayRoutesResponse> {
 public:
  explicit RelayWatch(WatchHub* hub) : StreamOf(hub) {}

 private:
  Step Next(v1::WatchRelayRoutesResponse* msg, grpc::Status* status) override {
    absl::StatusOr<v1::WatchRelayRoutesResponse> table = hub_->core_->RelayRoutes();
    if (!table.ok()) {
      *status = RpcFailed("WatchRelayRoutes", table.status());
      return Step::kFail;
    }
    // Most registry changes (a heartbeat, a node's capacity) move no route.
    v1::WatchRelayRoutesResponse compared = *table;
    compared.clear_observe_time();
    std::string now = compared.SerializeAsString();
    if (now == last_) return Step::kNothing;
    last_ = std::move(now);
    *msg = *std::move(table);
    return Step::kSend;
  }

  std::string last_;  // the table last sent, serialized without its time; only Next touches it
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
  Add(watch);
  watch->Wake();  // the record now (or NOT_FOUND)
  return watch;
}

grpc::ServerWriteReactor<v1::WatchRelayRoutesResponse>* WatchHub::WatchRelayRoutes() {
  auto* watch = new RelayWatch(this);
  Add(watch);
  watch->Wake();  // the table now (or FAILED_PRECONDITION)
  return watch;
}

void WatchHub::Add(Stream* watch) {
  absl::MutexLock l(&mu_);
  watches_.insert(watch);
}

size_t WatchHub::size() {
  absl::MutexLock l(&mu_);
  return watches_.size();
}

void WatchHub::Remove(Stream* watch) {
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
    for (Stream* watch : watches_) watch->Wake();
  }
}

}  // namespace ppn::fleet
