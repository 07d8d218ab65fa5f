#include "common/ledger_outbox.h"

#include <set>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn {
namespace {

using ppn::ledger::v1::AppendRequest;

// A ledger that can be down, refuse kinds, and remembers keys as the real one does.
struct FakeLedger {
  absl::Mutex mu;
  bool down = false;
  std::set<std::string> refused_kinds;
  std::set<std::string> keys;
  std::vector<std::string> subjects;
  LedgerAppendFn Fn() {
    return [this](const AppendRequest& r) {
      absl::MutexLock l(&mu);
      if (down) return absl::UnavailableError("ledger down");
      if (refused_kinds.count(r.kind())) return absl::PermissionDeniedError("role may not append " + r.kind());
      if (keys.insert(r.idempotency_key()).second) subjects.push_back(r.subject());
      return absl::OkStatus();
    };
  }
};

AppendRequest Entry(const std::string& subject, const std::string& kind = "vm.create") {
  AppendRequest r;
  r.set_kind(kind);
  r.set_subject(subject);
  return r;
}

TEST_CASE("entries spooled while the ledger is down arrive in order once it is back", "[common][ledger_outbox]") {
  testing::TempDir dir;
  FakeLedger ledger;
  ledger.down = true;
  {
    auto outbox = LedgerOutbox::Open(dir.File("spool.db"), "fleet", ledger.Fn());
    REQUIRE(outbox.ok());
    for (const char* s : {"vm-1", "vm-2", "vm-3"}) REQUIRE((*outbox)->Enqueue(Entry(s)).ok());
    CHECK((*outbox)->DeliverOnce() == 0);
    CHECK((*outbox)->Pending() == 3);
  }
  ledger.down = false;  // and the service restarted: the spool survived
  auto outbox = LedgerOutbox::Open(dir.File("spool.db"), "fleet", ledger.Fn());
  REQUIRE(outbox.ok());
  CHECK((*outbox)->DeliverOnce() == 3);
  CHECK((*outbox)->Pending() == 0);
  CHECK(ledger.subjects == std::vector<std::string>{"vm-1", "vm-2", "vm-3"});
}

TEST_CASE("a spool made anew does not reuse the keys of the one it replaces", "[common][ledger_outbox]") {
  testing::TempDir dir;
  FakeLedger ledger;
  for (int round = 0; round < 2; ++round) {
    auto outbox = LedgerOutbox::Open(dir.File("spool.db"), "audit", ledger.Fn());
    REQUIRE(outbox.ok());
    REQUIRE((*outbox)->Enqueue(Entry("vm-" + std::to_string(round))).ok());
    CHECK((*outbox)->DeliverOnce() == 1);
    outbox->reset();
    std::remove(dir.File("spool.db").c_str());  // the spool file is lost
    std::remove(dir.File("spool.db-wal").c_str());
    std::remove(dir.File("spool.db-shm").c_str());
  }
  CHECK(ledger.subjects == std::vector<std::string>{"vm-0", "vm-1"});
}

TEST_CASE("an entry the ledger refuses for good is set aside and does not block the rest", "[common][ledger_outbox]") {
  testing::TempDir dir;
  FakeLedger ledger;
  ledger.refused_kinds = {"vm.migrate"};
  auto outbox = LedgerOutbox::Open(dir.File("spool.db"), "fleet", ledger.Fn());
  REQUIRE(outbox.ok());
  REQUIRE((*outbox)->Enqueue(Entry("vm-1", "vm.migrate")).ok());
  REQUIRE((*outbox)->Enqueue(Entry("vm-2")).ok());
  CHECK((*outbox)->DeliverOnce() == 1);
  CHECK((*outbox)->Pending() == 0);
  CHECK((*outbox)->Refused() == 1);
  CHECK(ledger.subjects == std::vector<std::string>{"vm-2"});
}

TEST_CASE("the delivery thread delivers an entry right after it is spooled", "[common][ledger_outbox]") {
  testing::TempDir dir;
  FakeLedger ledger;
  auto outbox = LedgerOutbox::Open(dir.File("spool.db"), "fleet", ledger.Fn());
  REQUIRE(outbox.ok());
  (*outbox)->StartDelivery(absl::Seconds(60));  // far longer than the wait below
  REQUIRE((*outbox)->Enqueue(Entry("vm-1")).ok());
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((*outbox)->Pending() != 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  CHECK((*outbox)->Pending() == 0);
  absl::MutexLock l(&ledger.mu);
  CHECK(ledger.subjects == std::vector<std::string>{"vm-1"});
}

}  // namespace
}  // namespace ppn
