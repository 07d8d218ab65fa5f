#include "host_agent/qmp_migration.h"

#include <unistd.h>

#include <algorithm>

#include "catch2/catch.hpp"
#include "host_agent/testing/fake_qmp_server.h"
#include "tests/fakes/fake_clock.h"

namespace ppn::host {
namespace {

using testing::FakeQmpServer;

// A short socket path (unix sockets are limited to 108 bytes).
std::string SocketPath() {
  static int n = 0;
  return "/tmp/ppn-qmpm-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".sock";
}

ppn::types::v1::MigrationProgress Base() {
  ppn::types::v1::MigrationProgress base;
  base.set_vm_id("vm-1");
  base.set_source_node_id("a");
  base.set_target_node_id("b");
  return base;
}

OutgoingMigration Migration() {
  OutgoingMigration m;
  m.uri = "tcp:127.0.0.1:21000";
  m.max_bandwidth_mib_per_second = 8;
  m.poll_interval = absl::Milliseconds(1);
  m.settle_timeout = absl::Milliseconds(200);
  return m;
}

TEST_CASE("an outgoing migration sets block migration, follows query-migrate and reports the totals",
          "[host_agent][qmp]") {
  std::string path = SocketPath();
  auto server = *FakeQmpServer::Start(path);
  std::vector<nlohmann::json> answers = {
      {{"status", "active"}, {"disk", {{"transferred", 10}, {"remaining", 90}, {"total", 100}}}},
      {{"status", "active"}, {"ram", {{"transferred", 500}, {"remaining", 500}, {"total", 1000}, {"mbps", 8.0}}}},
      {{"status", "completed"}, {"ram", {{"transferred", 1000}}}, {"total-time", 1500}, {"downtime", 42}}};
  size_t next = 0;
  server->Handle("query-migrate", [&](const nlohmann::json&) { return FakeQmpServer::Return(answers[next++]); });
  auto qmp = *QmpClient::Connect(path, absl::Seconds(5));
  ppn::testing::FakeClock clock;
  std::vector<ppn::types::v1::MigrationPhase> phases;
  ppn::types::v1::MigrationProgress done =
      MigrateOverQmp(qmp.get(), Migration(), Base(), &clock, [&](const ppn::types::v1::MigrationProgress& p) {
        phases.push_back(p.phase());
        CHECK(p.vm_id() == "vm-1");
        return true;
      });
  CHECK(done.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(done.transferred_bytes() == 1000);
  CHECK(done.total_time().seconds() == 1);
  CHECK(done.downtime().nanos() == 42000000);
  CHECK(phases == std::vector<ppn::types::v1::MigrationPhase>{ppn::types::v1::MIGRATION_PHASE_DISK,
                                                              ppn::types::v1::MIGRATION_PHASE_MEMORY});
  std::vector<std::string> commands = server->commands();
  CHECK(std::vector<std::string>(commands.begin(), commands.begin() + 3) ==
        std::vector<std::string>{"migrate-set-capabilities", "migrate-set-parameters", "migrate"});
  CHECK(server->ArgumentsOf("migrate")[0]["uri"] == "tcp:127.0.0.1:21000");
  CHECK(server->ArgumentsOf("migrate-set-parameters")[0]["max-bandwidth"] == 8 << 20);
  CHECK(server->ArgumentsOf("migrate-set-capabilities")[0]["capabilities"][0]["capability"] == "block");
}

TEST_CASE("a migration QEMU fails is FAILED with QEMU's reason", "[host_agent][qmp]") {
  std::string path = SocketPath();
  auto server = *FakeQmpServer::Start(path);
  server->Handle("query-migrate", [](const nlohmann::json&) {
    return FakeQmpServer::Return({{"status", "failed"}, {"error-desc", "Connection reset by peer"}});
  });
  auto qmp = *QmpClient::Connect(path, absl::Seconds(5));
  ppn::testing::FakeClock clock;
  auto done = MigrateOverQmp(qmp.get(), Migration(), Base(), &clock, [](const auto&) { return true; });
  CHECK(done.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
  CHECK(done.message() == "Connection reset by peer");
}

TEST_CASE("a cancel that comes too late reports the migration that completed", "[host_agent][qmp]") {
  std::string path = SocketPath();
  auto server = *FakeQmpServer::Start(path);
  bool cancelled = false;
  server->Handle("migrate_cancel", [&](const nlohmann::json&) {
    cancelled = true;
    return FakeQmpServer::Return();
  });
  server->Handle("query-migrate", [&](const nlohmann::json&) {
    return FakeQmpServer::Return(cancelled ? nlohmann::json{{"status", "completed"}, {"total-time", 10}}
                                           : nlohmann::json{{"status", "active"}});
  });
  auto qmp = *QmpClient::Connect(path, absl::Seconds(5));
  ppn::testing::FakeClock clock;
  auto done = MigrateOverQmp(qmp.get(), Migration(), Base(), &clock, [](const auto&) { return false; });
  CHECK(cancelled);
  CHECK(done.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);

  SECTION("and one QEMU stops is FAILED, saying who cancelled") {
    server->Handle("query-migrate", [&](const nlohmann::json&) {
      return FakeQmpServer::Return({{"status", cancelled ? "cancelled" : "active"}});
    });
    cancelled = false;
    auto stopped = MigrateOverQmp(qmp.get(), Migration(), Base(), &clock, [](const auto&) { return false; });
    CHECK(stopped.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
    CHECK(stopped.message() == "cancelled by the caller");
  }
}

TEST_CASE("an incoming migration is waiting until a source connects", "[host_agent][qmp]") {
  std::string path = SocketPath();
  auto server = *FakeQmpServer::Start(path);
  std::string run_state = "inmigrate";
  nlohmann::json migrate = nlohmann::json::object();
  server->Handle("query-status", [&](const nlohmann::json&) { return FakeQmpServer::Return({{"status", run_state}}); });
  server->Handle("query-migrate", [&](const nlohmann::json&) { return FakeQmpServer::Return(migrate); });
  auto qmp = *QmpClient::Connect(path, absl::Seconds(5));
  CHECK(*QueryIncoming(qmp.get()) == IncomingState::kWaiting);
  migrate = {{"status", "active"}};
  CHECK(*QueryIncoming(qmp.get()) == IncomingState::kReceiving);
  migrate = {{"status", "failed"}};
  CHECK(*QueryIncoming(qmp.get()) == IncomingState::kFailed);
  run_state = "running";
  CHECK(*QueryIncoming(qmp.get()) == IncomingState::kRunning);
}

TEST_CASE("only a paused guest is continued", "[host_agent][qmp]") {
  std::string path = SocketPath();
  auto server = *FakeQmpServer::Start(path);
  std::string run_state = "postmigrate";
  server->Handle("query-status", [&](const nlohmann::json&) { return FakeQmpServer::Return({{"status", run_state}}); });
  auto qmp = *QmpClient::Connect(path, absl::Seconds(5));
  CHECK(*ContinueIfPaused(qmp.get()) == "postmigrate");
  run_state = "running";
  CHECK(*ContinueIfPaused(qmp.get()) == "running");
  run_state = "inmigrate";
  CHECK(ContinueIfPaused(qmp.get()).status().code() == absl::StatusCode::kFailedPrecondition);
  std::vector<std::string> commands = server->commands();
  CHECK(std::count(commands.begin(), commands.end(), "cont") == 1);
}

}  // namespace
}  // namespace ppn::host
