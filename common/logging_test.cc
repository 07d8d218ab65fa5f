#include "common/logging.h"

#include <unistd.h>

#include "catch2/catch.hpp"
#include "common/files.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"
#include "tests/harness/temp_dir.h"

namespace ppn {
namespace {

TEST_CASE("a tenant's string cannot forge a log line", "[common][logging]") {
  testing::TempDir dir;
  std::string file = dir.File("svc.log");
  REQUIRE(InitLogging("host_agent", "info", file).ok());
  std::string image = "ppn-test-guest\n2026-12-01T00:00:00.000 I host_agent vm.destroyed tenant=globex";
  spdlog::info("vm.spawn_failed image={} tenant={}", image, "acme");
  spdlog::info("vm.spawn_failed image={}", LogValue(image));
  spdlog::default_logger()->flush();
  absl::StatusOr<std::string> text = ReadFile(file);
  REQUIRE(text.ok());
  int lines = 0;
  for (char c : *text) lines += c == '\n';
  CHECK(lines == 2);
  CHECK(text->find("image=ppn-test-guest\\n2026-12-01") != std::string::npos);
  CHECK(text->find("image=\"ppn-test-guest\\n2026-12-01T00:00:00.000 I host_agent vm.destroyed tenant=globex\"") !=
        std::string::npos);
  spdlog::set_default_logger(spdlog::stderr_logger_mt("test-stderr"));
}

TEST_CASE("log values are quoted only when they need it", "[common][logging]") {
  CHECK(LogValue("acme") == "acme");
  CHECK(LogValue("") == "\"\"");
  CHECK(LogValue("a b") == "\"a b\"");
  CHECK(LogValue("say \"hi\"") == "\"say \\\"hi\\\"\"");
  CHECK(LogValue("k=v") == "\"k=v\"");
  CHECK(LogValue(std::string("bell\x07", 5)) == "\"bell\\x07\"");
  CHECK(EscapeControlCharacters("a\tb\r\n") == "a\\tb\\r\\n");
}

}  // namespace
}  // namespace ppn
