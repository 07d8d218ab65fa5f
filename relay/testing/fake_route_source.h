#pragma once

// FakeRouteSource: the fleet's route stream from the test's hand. Each Watch opens a stream
// that yields the tables the test Push()es, in order; End() ends the stream open then (or the
// next one) once it has read what is queued, and streams opened after that wait for more.
// Cancel ends a stream at once. Thread-safe.

#include <deque>
#include <memory>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "relay/route_source.h"

namespace ppn::relay::testing {

class FakeRouteSource final : public RouteSource {
 public:
  std::unique_ptr<RouteStream> Watch() override {
    absl::MutexLock l(&mu_);
    ++watches_;
    return std::make_unique<Stream>(this);
  }
  // Queues a table for the open stream (or the next one).
  void Push(ppn::fleet::v1::WatchRelayRoutesResponse table) {
    absl::MutexLock l(&mu_);
    tables_.push_back(std::move(table));
  }
  // Ends the open stream with `status` once the queued tables are read.
  void End(absl::Status status) {
    absl::MutexLock l(&mu_);
    ended_ = true;
    end_status_ = std::move(status);
  }
  int watches() {
    absl::MutexLock l(&mu_);
    return watches_;
  }

 private:
  class Stream final : public RouteStream {
   public:
    explicit Stream(FakeRouteSource* source) : source_(source) {}
    bool Read(ppn::fleet::v1::WatchRelayRoutesResponse* table) override {
      FakeRouteSource* s = source_;
      absl::MutexLock l(&s->mu_);
      auto ready = [this, s]() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // Await holds s->mu_
        return cancelled_ || s->ended_ || !s->tables_.empty();
      };
      s->mu_.Await(absl::Condition(&ready));
      if (cancelled_) return false;
      if (s->tables_.empty()) {
        s->ended_ = false;  // this stream took the end: the next one waits for more
        end_status_ = s->end_status_;
        return false;
      }
      *table = std::move(s->tables_.front());
      s->tables_.pop_front();
      return true;
    }
    absl::Status Finish() override {
      absl::MutexLock l(&source_->mu_);
      return cancelled_ ? absl::CancelledError("cancelled") : end_status_;
    }
    void Cancel() override {
      absl::MutexLock l(&source_->mu_);
      cancelled_ = true;
    }

   private:
    FakeRouteSource* const source_;
    bool cancelled_ = false;   // guarded by source_->mu_
    absl::Status end_status_;  // guarded by source_->mu_
  };

  absl::Mutex mu_;
  std::deque<ppn::fleet::v1::WatchRelayRoutesResponse> tables_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  int watches_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ppn::relay::testing
