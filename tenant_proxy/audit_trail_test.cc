#include "tenant_proxy/audit_trail.h"

#include <fstream>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"
#include "nlohmann/json.hpp"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::proxy {
namespace {

using ppn::ledger::v1::AppendRequest;

// A ledger that keeps what it is given.
struct FakeLedger {
  absl::Mutex mu;
  std::vector<AppendRequest> entries;
  bool down = false;
  LedgerAppendFn Fn() {
    return [this](const AppendRequest& r) {
      absl::MutexLock l(&mu);
      if (down) return absl::UnavailableError("ledger down");
      entries.push_back(r);
      return absl::OkStatus();
    };
  }
};

std::vector<nlohmann::json> Lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST_CASE("one outcome table serves creates and destroys", "[proxy][audit]") {
  using ppn::ledger::v1::OUTCOME_DENIED;
  using ppn::ledger::v1::OUTCOME_FAILURE;
  CHECK(OutcomeOf(absl::OkStatus()) == ppn::ledger::v1::OUTCOME_SUCCESS);
  for (const absl::Status& refused :
       {absl::UnauthenticatedError(""), absl::PermissionDeniedError(""), absl::InvalidArgumentError(""),
        absl::OutOfRangeError(""), absl::NotFoundError(""), absl::AlreadyExistsError(""),
        absl::ResourceExhaustedError("")}) {
    INFO(refused.ToString());
    CHECK(OutcomeOf(refused) == OUTCOME_DENIED);
  }
  for (const absl::Status& failed :
       {absl::FailedPreconditionError(""), absl::AbortedError(""), absl::UnavailableError(""),
        absl::DeadlineExceededError(""), absl::CancelledError(""), absl::InternalError(""), absl::UnknownError(""),
        absl::DataLossError(""), absl::UnimplementedError("")}) {
    INFO(failed.ToString());
    CHECK(OutcomeOf(failed) == OUTCOME_FAILURE);
  }
}

TEST_CASE("a record is one JSON line and one ledger entry with the request's names", "[proxy][audit]") {
  testing::TempDir dir;
  testing::FakeClock clock;
  FakeLedger ledger;
  auto trail = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock, ledger.Fn());
  AuditRecord intent{"acme", "tenant.vm.create", "", ppn::ledger::v1::OUTCOME_PENDING, "forwarding", "3f2a0b1c"};
  intent.request_id = "r-1";
  intent.display_name = "web";
  REQUIRE(trail->Record(intent).ok());
  AuditRecord done = intent;
  done.vm_id = "vm-1";
  done.outcome = ppn::ledger::v1::OUTCOME_SUCCESS;
  done.detail = "OK";
  REQUIRE(trail->Record(done).ok());

  auto lines = Lines(dir.File("audit.jsonl"));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["outcome"] == "OUTCOME_PENDING");
  CHECK(lines[0]["request_id"] == "r-1");
  CHECK(lines[0]["display_name"] == "web");
  CHECK(lines[0]["vm_id"] == "");
  CHECK(lines[1]["vm_id"] == "vm-1");
  CHECK(lines[1].count("count") == 0);

  CHECK(trail->Pending() == 2);
  CHECK(trail->DeliverOnce() == 2);
  REQUIRE(ledger.entries.size() == 2);
  CHECK(ledger.entries[0].kind() == "tenant.vm.create");
  CHECK(ledger.entries[0].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
  CHECK(ledger.entries[0].attributes().at("request_id") == "r-1");
  CHECK(ledger.entries[0].attributes().at("display_name") == "web");
  CHECK(ledger.entries[1].subject() == "vm-1");
  CHECK(ledger.entries[1].attributes().count("count") == 0);
}

TEST_CASE("a record survives a crash right after it was written", "[proxy][audit]") {
  testing::TempDir dir;
  testing::FakeClock clock;
  FakeLedger ledger;
  ledger.down = true;
  {
    auto trail = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock, ledger.Fn());
    AuditRecord intent{"acme", "tenant.vm.destroy", "vm-1", ppn::ledger::v1::OUTCOME_PENDING, "forwarding", "t"};
    REQUIRE(trail->Record(intent).ok());
    // No delivery, no orderly shutdown beyond closing: what a SIGKILL leaves is the file and
    // the spool (the crash itself is tested over a real process in tests/integration).
  }
  ledger.down = false;
  auto reopened = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock, ledger.Fn());
  CHECK(Lines(dir.File("audit.jsonl")).size() == 1);
  CHECK(reopened->Pending() == 1);
  CHECK(reopened->DeliverOnce() == 1);
  REQUIRE(ledger.entries.size() == 1);
  CHECK(ledger.entries[0].subject() == "vm-1");
  CHECK(ledger.entries[0].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
}

TEST_CASE("200 rate-limited calls in one window make one record with their count", "[proxy][audit][rate]") {
  testing::TempDir dir;
  testing::FakeClock clock;
  FakeLedger ledger;
  auto trail = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock, ledger.Fn(),
                                 AuditOptions{absl::Seconds(10)});
  for (int i = 0; i < 200; ++i) {
    trail->CountRateLimited("acme");
    clock.Advance(absl::Milliseconds(20));  // 4 s in all
  }
  trail->CountRateLimited("globex");
  CHECK(*trail->FlushRateLimited() == 0);  // the windows are still open
  CHECK(Lines(dir.File("audit.jsonl")).empty());

  clock.Advance(absl::Seconds(6));
  CHECK(*trail->FlushRateLimited() == 1);  // acme's window ended; globex's began later
  clock.Advance(absl::Seconds(4));
  CHECK(*trail->FlushRateLimited() == 1);
  auto lines = Lines(dir.File("audit.jsonl"));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["tenant"] == "acme");
  CHECK(lines[0]["operation"] == kRateLimitKind);
  CHECK(lines[0]["outcome"] == "OUTCOME_DENIED");
  CHECK(lines[0]["count"] == 200);
  CHECK(lines[0]["detail"].get<std::string>().find("the rate limit refused 200 calls from ") == 0);
  CHECK(lines[1]["tenant"] == "globex");
  CHECK(lines[1]["count"] == 1);

  trail->DeliverOnce();
  REQUIRE(ledger.entries.size() == 2);
  CHECK(ledger.entries[0].kind() == kRateLimitKind);
  CHECK(ledger.entries[0].attributes().at("count") == "200");
}

TEST_CASE("a refusal after its tenant's window ended starts the next window", "[proxy][audit][rate]") {
  testing::TempDir dir;
  testing::FakeClock clock;
  FakeLedger ledger;
  auto trail = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock, ledger.Fn());
  trail->CountRateLimited("acme");
  trail->CountRateLimited("acme");
  clock.Advance(absl::Seconds(10));
  trail->CountRateLimited("acme");  // a new window; the old one waits for the flush
  CHECK(*trail->FlushRateLimited() == 1);
  CHECK(*trail->FlushRateLimited(/*all=*/true) == 1);
  auto lines = Lines(dir.File("audit.jsonl"));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["count"] == 2);
  CHECK(lines[1]["count"] == 1);
}

TEST_CASE("an open rate-limit window is recorded when the trail closes", "[proxy][audit][rate]") {
  testing::TempDir dir;
  testing::FakeClock clock;
  FakeLedger ledger;
  {
    auto trail = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock, ledger.Fn());
    for (int i = 0; i < 5; ++i) trail->CountRateLimited("acme");
  }
  auto lines = Lines(dir.File("audit.jsonl"));
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["count"] == 5);
}

}  // namespace
}  // namespace ppn::proxy
