// The real ledger binary killed with SIGKILL in the middle of a stream of appends loses no
// acknowledged entry, and the offline verifier accepts the file afterwards.

#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "catch2/catch.hpp"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_pki.h"

namespace ppn {
namespace {

using namespace ppn::ledger::v1;  // NOLINT: test brevity
using ppn::testing::RunfilePath;
using ppn::testing::Subprocess;

struct LedgerProcess {
  std::unique_ptr<Subprocess> process;
  int port = 0;
};

LedgerProcess StartLedger(const ppn::testing::TestPki& pki, const TlsFiles& tls, const std::string& dir,
                          const std::string& tag) {
  std::string port_file = dir + "/port-" + tag;
  LedgerProcess p;
  p.process = std::make_unique<Subprocess>(
      std::vector<std::string>{RunfilePath("ledger/ledger"), "--mesh=" + pki.mesh(), "--listen=127.0.0.1:0",
                               "--tls_ca=" + tls.ca_cert, "--tls_cert=" + tls.cert, "--tls_key=" + tls.key,
                               "--db=" + dir + "/ledger.db", "--signing_key=" + dir + "/note.key",
                               "--port_file=" + port_file},
      dir + "/ledger.log");
  p.port = ppn::testing::WaitForPortFile(port_file, absl::Seconds(20));
  return p;
}

std::unique_ptr<Ledger::Stub> Stub(int port, const TlsFiles& tls) {
  return Ledger::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port), MtlsChannelCredentials(tls)));
}

TEST_CASE("a ledger killed mid-stream keeps every acknowledged append and verifies", "[ledger][crash]") {
  ppn::testing::TestPki pki("ppn.test");
  TlsFiles server_tls = pki.Issue("ledger", "ledger");
  TlsFiles proxy_tls = pki.Issue("tenant-proxy", "proxy");
  TlsFiles operator_tls = pki.Issue("operator", "op");
  std::string dir = pki.dir();

  LedgerProcess ledger = StartLedger(pki, server_tls, dir, "1");
  std::mutex mu;
  std::map<uint64_t, std::string> acked;  // index -> leaf hash
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      auto stub = Stub(ledger.port, proxy_tls);
      for (int i = 0; i < 100000 && !stop; ++i) {
        AppendRequest r;
        r.set_kind("tenant.vm.create");
        r.set_tenant_id("acme");
        r.set_subject("vm-" + std::to_string(t) + "-" + std::to_string(i));
        r.set_outcome(OUTCOME_SUCCESS);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        AppendResponse resp;
        if (!stub->Append(&ctx, r, &resp).ok()) break;  // the server is gone
        std::lock_guard<std::mutex> l(mu);
        acked[resp.index()] = resp.leaf_hash();
      }
    });
  }
  // Kill once a few hundred appends are acknowledged (bounded by 20 s).
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (acked.size() >= 400) break;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  ledger.process->Signal(SIGKILL);
  ledger.process->Wait(absl::Seconds(10));
  stop = true;
  for (auto& c : clients) c.join();
  REQUIRE(acked.size() >= 400);

  LedgerProcess restarted = StartLedger(pki, server_tls, dir, "2");
  auto op = Stub(restarted.port, operator_tls);
  std::map<uint64_t, std::string> stored;
  for (uint64_t next = 0;;) {
    GetEntriesRequest req;
    req.set_start_index(next);
    req.set_page_size(1000);
    GetEntriesResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    REQUIRE(op->GetEntries(&ctx, req, &resp).ok());
    if (resp.entries().empty()) break;
    for (const auto& e : resp.entries()) stored[e.index()] = e.leaf_hash();
    next = resp.next_index();
  }
  size_t lost = 0;
  for (const auto& [index, hash] : acked) {
    auto it = stored.find(index);
    if (it == stored.end() || it->second != hash) ++lost;
  }
  CHECK(lost == 0);
  CHECK(stored.size() >= acked.size());

  GetCheckpointResponse cp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    REQUIRE(op->GetCheckpoint(&ctx, {}, &cp).ok());
  }
  CHECK(cp.tree_size() == stored.size());
  restarted.process->Signal(SIGTERM);
  int status = restarted.process->Wait(absl::Seconds(20));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  ppn::testing::RunResult verify = ppn::testing::Run(
      {RunfilePath("ledger/ledger_verify"), "--db=" + dir + "/ledger.db", "--key=" + cp.verifier_key()},
      dir + "/verify.out", absl::Seconds(60));
  INFO(verify.output);
  CHECK(verify.exit_code == 0);
  CHECK(verify.output.rfind("OK " + std::to_string(stored.size()) + " entries", 0) == 0);
}

}  // namespace
}  // namespace ppn
