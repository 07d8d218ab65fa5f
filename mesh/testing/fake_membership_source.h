#pragma once

// FakeLedger: an in-memory membership ledger for tests. Each Reader() is a MembershipSource
// of its own that reads from index 0, like an agent that just started; it is caught up once
// it returned every entry that existed at its first Next. Thread-safe.

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "mesh/membership_source.h"

namespace ppn::mesh::testing {

class FakeLedger {
 public:
  // Appends `e` with the next index (returned); wakes every reader.
  uint64_t Append(ppn::ledger::v1::Entry e) {
    absl::MutexLock l(&mu_);
    e.set_index(entries_.size());
    entries_.push_back(std::move(e));
    return entries_.size() - 1;
  }
  uint64_t Join(const std::string& name, const std::string& key, const std::string& address,
                const std::string& endpoint = "") {
    ppn::ledger::v1::Entry e;
    e.set_kind("node.join");
    e.set_subject(name);
    e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
    (*e.mutable_attributes())["wireguard_public_key"] = key;
    (*e.mutable_attributes())["mesh_address"] = address;
    if (!endpoint.empty()) (*e.mutable_attributes())["wireguard_endpoint"] = endpoint;
    return Append(std::move(e));
  }
  uint64_t Revoke(const std::string& name) {
    ppn::ledger::v1::Entry e;
    e.set_kind("node.revoke");
    e.set_subject(name);
    e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
    return Append(std::move(e));
  }
  // While set, readers with nothing to return answer `status`.
  void SetUnavailable(absl::Status status) {
    absl::MutexLock l(&mu_);
    unavailable_ = std::move(status);
  }

  // While held, readers never report caught_up (a ledger still streaming its history).
  void HoldCatchUp(bool hold) {
    absl::MutexLock l(&mu_);
    hold_catch_up_ = hold;
  }

  std::unique_ptr<MembershipSource> Reader() { return std::make_unique<ReaderImpl>(this); }

 private:
  class ReaderImpl final : public MembershipSource {
   public:
    explicit ReaderImpl(FakeLedger* ledger) : ledger_(ledger) {}
    absl::StatusOr<MembershipBatch> Next(absl::Duration wait) override {
      absl::MutexLock l(&ledger_->mu_);
      if (target_ < 0) target_ = static_cast<int64_t>(ledger_->entries_.size());
      auto ready = [this]() {
        return ledger_->entries_.size() > next_ ||
               (!caught_up_ && !ledger_->hold_catch_up_ && static_cast<int64_t>(next_) >= target_);
      };
      ledger_->mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
      MembershipBatch batch;
      while (next_ < ledger_->entries_.size()) batch.entries.push_back(ledger_->entries_[next_++]);
      if (static_cast<int64_t>(next_) >= target_ && !ledger_->hold_catch_up_) caught_up_ = true;
      batch.caught_up = caught_up_;
      if (batch.entries.empty() && !ledger_->unavailable_.ok()) return ledger_->unavailable_;
      return batch;
    }

   private:
    FakeLedger* const ledger_;
    int64_t target_ = -1;
    size_t next_ = 0;
    bool caught_up_ = false;
  };

  absl::Mutex mu_;
  std::vector<ppn::ledger::v1::Entry> entries_ ABSL_GUARDED_BY(mu_);
  absl::Status unavailable_ ABSL_GUARDED_BY(mu_);
  bool hold_catch_up_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ppn::mesh::testing
