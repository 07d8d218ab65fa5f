#include "common/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "common/metrics_server.h"
#include "tests/harness/temp_dir.h"

namespace ppn::metrics {
namespace {

// Runs `promtool check metrics` (Prometheus' own parser and linter) on `text`.
std::pair<int, std::string> Promtool(const std::string& text) {
  ppn::testing::TempDir dir;
  std::string in = dir.File("metrics.txt"), out = dir.File("out.txt");
  FILE* f = std::fopen(in.c_str(), "w");
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  int rc = std::system(absl::StrCat("promtool check metrics < ", in, " > ", out, " 2>&1").c_str());
  std::string report;
  if (FILE* r = std::fopen(out.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, r)) > 0) report.append(buf, n);
    std::fclose(r);
  }
  return {WEXITSTATUS(rc), report};
}

std::string Get(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return close(fd), "";
  std::string req = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\n\r\n");
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST_CASE("counters, gauges, histograms and collected gauges render as Prometheus parses them", "[common][metrics]") {
  Registry r;
  r.CounterAdd("ppn_things_total", "Things done.", {{"node", "laptop-a"}, {"code", "OK"}}, 2);
  r.CounterAdd("ppn_things_total", "Things done.", {{"node", "laptop-a"}, {"code", "OK"}});
  r.GaugeSet("ppn_free_bytes", "Free bytes,\nper node \\ today.", {{"node", "we\"ird\\na\nme"}}, 1.5);
  r.Observe("ppn_wait_seconds", "Waits.", {}, 0.02);
  r.Observe("ppn_wait_seconds", "Waits.", {}, 7);
  r.Observe("ppn_wait_seconds", "Waits.", {}, 100);
  r.AddCollector([](Snapshot& s) {
    s.Gauge("ppn_vms", "VMs by state.", {{"state", "RUNNING"}}, 3);
    s.Gauge("ppn_vms", "VMs by state.", {{"state", "STOPPED"}}, 0);
  });
  std::string text = r.Render();
  CHECK(
      absl::StrContains(text, "# TYPE ppn_things_total counter\nppn_things_total{node=\"laptop-a\",code=\"OK\"} 3\n"));
  CHECK(absl::StrContains(text, "ppn_free_bytes{node=\"we\\\"ird\\\\na\\nme\"} 1.5\n"));
  CHECK(absl::StrContains(text, "# HELP ppn_free_bytes Free bytes,\\nper node \\\\ today.\n"));
  CHECK(absl::StrContains(text, "ppn_wait_seconds_bucket{le=\"0.025\"} 1\n"));
  CHECK(absl::StrContains(text, "ppn_wait_seconds_bucket{le=\"10\"} 2\n"));
  CHECK(absl::StrContains(text, "ppn_wait_seconds_bucket{le=\"+Inf\"} 3\n"));
  CHECK(absl::StrContains(text, "ppn_wait_seconds_count 3\n"));
  CHECK(absl::StrContains(text, "ppn_vms{state=\"RUNNING\"} 3\n"));
  auto [rc, report] = Promtool(text);
  INFO(text << "\n--- promtool:\n" << report);
  CHECK(rc == 0);
  CHECK(report.empty());
}

TEST_CASE("promtool really rejects a malformed exposition (the check above can fail)", "[common][metrics]") {
  auto [rc, report] = Promtool("ppn_x{node=\"a} 1\n");
  CHECK(rc != 0);
}

TEST_CASE("the metrics server answers GET /metrics, nothing else, and a silent client does not hold it up",
          "[common][metrics]") {
  Registry r;
  r.CounterAdd("ppn_hits_total", "Hits.", {});
  auto server = *MetricsServer::Start("127.0.0.1:0", &r);
  // A client that connects and says nothing.
  int silent = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(server->port());
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  REQUIRE(connect(silent, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string ok = Get(server->port(), "/metrics");
  CHECK(absl::StartsWith(ok, "HTTP/1.1 200 OK\r\n"));
  CHECK(absl::StrContains(ok, "Content-Type: text/plain; version=0.0.4"));
  CHECK(absl::StrContains(ok, "ppn_hits_total 1\n"));
  CHECK(absl::StartsWith(Get(server->port(), "/"), "HTTP/1.1 404 Not Found\r\n"));
  close(silent);
  CHECK(MetricsServer::Start("127.0.0.1:" + std::to_string(server->port()), &r).status().message() ==
        "metrics: cannot listen on 127.0.0.1:" + std::to_string(server->port()));
}

}  // namespace
}  // namespace ppn::metrics
