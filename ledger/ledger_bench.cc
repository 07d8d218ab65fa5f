// ledger_bench: measures the ledger's performance goals on this machine. Not a test.
//
//   bazel run -c opt //ledger:ledger_bench -- [--entries=1000000] [--clients=64] [--seconds=5]
//
// 1. Durable appends over mTLS gRPC: one client one at a time, then --clients concurrent.
// 2. Inclusion-proof latency (p50/p99) at --entries entries.
// 3. Offline verification time of that file.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/clock.h"
#include "common/tls_credentials.h"
#include "common/x509.h"
#include "grpcpp/create_channel.h"
#include "ledger/entry_codec.h"
#include "ledger/ledger_server.h"
#include "ledger/verifier.h"

ABSL_FLAG(uint64_t, entries, 1000000, "Log size for the proof and verify measurements");
ABSL_FLAG(int, clients, 64, "Concurrent clients for the batched append measurement");
ABSL_FLAG(double, seconds, 5, "Duration of each append measurement");
ABSL_FLAG(std::string, dir, "/tmp/ppn-ledger-bench", "Scratch directory (wiped)");

namespace {

using namespace ppn;          // NOLINT
using namespace ppn::ledger;  // NOLINT

void WriteFile(const std::string& path, const std::string& data) {
  FILE* f = std::fopen(path.c_str(), "w");
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
}

TlsFiles Issue(const x509::Identity& ca, const std::string& dir, const std::string& role) {
  x509::CertRequest req;
  req.common_name = role;
  req.spiffe_id = "spiffe://ppn.bench/" + role + "/" + role;
  req.dns_names = {"localhost"};
  req.ips = {"127.0.0.1"};
  x509::Identity id = *x509::Issue(ca, req);
  TlsFiles files{dir + "/ca.pem", dir + "/" + role + ".pem", dir + "/" + role + ".key"};
  WriteFile(files.cert, id.cert_pem);
  WriteFile(files.key, id.key_pem);
  return files;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Appends for `seconds` from `clients` threads, `batch` entries per RPC (1: Append, more:
// AppendBatch); returns durable appends per second.
double MeasureAppends(int port, const TlsFiles& tls, int clients, double seconds, int batch = 1) {
  std::atomic<uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), MtlsChannelCredentials(tls));
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = v1::Ledger::NewStub(channel);
      for (uint64_t i = 0; !stop; ++i) {
        v1::AppendBatchRequest req;
        for (int b = 0; b < batch; ++b) {
          v1::AppendRequest* r = req.add_entries();
          r->set_kind("tenant.vm.create");
          r->set_tenant_id("bench");
          r->set_subject("vm-" + std::to_string(c) + "-" + std::to_string(i) + "-" + std::to_string(b));
          r->set_outcome(v1::OUTCOME_SUCCESS);
        }
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        if (batch == 1) {
          v1::AppendResponse resp;
          if (stub->Append(&ctx, req.entries(0), &resp).ok()) ++done;
        } else {
          v1::AppendBatchResponse resp;
          if (stub->AppendBatch(&ctx, req, &resp).ok()) done += batch;
        }
      }
    });
  }
  absl::Time start = absl::Now();
  absl::SleepFor(absl::Seconds(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  return done / absl::ToDoubleSeconds(absl::Now() - start);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string dir = absl::GetFlag(FLAGS_dir);
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  x509::Identity ca = *x509::MakeCa("ppn.bench", absl::Hours(1));
  WriteFile(dir + "/ca.pem", ca.cert_pem);
  TlsFiles server_tls = Issue(ca, dir, "ledger");
  TlsFiles client_tls = Issue(ca, dir, "tenant-proxy");

  {
    auto store = *LedgerStore::Open(dir + "/appends.db");
    MerkleLog log(store.get(), *NoteSigner::FromSeed("ppn.bench/ledger", std::string(32, 'b')), RealClock::Get(),
                  MerkleLog::Options{"ppn.bench/ledger"});
    if (!log.Start().ok()) return 1;
    LedgerService service(&log);
    StartedServer server = *StartLedgerServer("ppn.bench", "127.0.0.1:0", server_tls, &service);
    double one = MeasureAppends(server.port, client_tls, 1, absl::GetFlag(FLAGS_seconds));
    std::printf("appends, 1 client, one at a time: %.0f durable appends/s (%.2f ms each)\n", one, 1000 / one);
    int clients = absl::GetFlag(FLAGS_clients);
    double many = MeasureAppends(server.port, client_tls, clients, absl::GetFlag(FLAGS_seconds));
    std::printf("appends, %d concurrent clients (group commit): %.0f durable appends/s\n", clients, many);
    double batched = MeasureAppends(server.port, client_tls, 16, absl::GetFlag(FLAGS_seconds), 32);
    std::printf("appends, 16 concurrent clients sending AppendBatch of 32: %.0f durable appends/s\n", batched);
    server.server->Shutdown();

    // The same load straight into the core, without gRPC and TLS: what storage sustains.
    std::atomic<uint64_t> done{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    SpiffeId actor{"ppn.bench", "tenant-proxy", "tenant-proxy"};
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        for (uint64_t i = 0; !stop; ++i) {
          v1::AppendRequest r;
          r.set_kind("tenant.vm.create");
          r.set_tenant_id("bench");
          r.set_subject("vm-core-" + std::to_string(c) + "-" + std::to_string(i));
          r.set_outcome(v1::OUTCOME_SUCCESS);
          if (log.Append(actor, r).ok()) ++done;
        }
      });
    }
    absl::Time start = absl::Now();
    absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_seconds)));
    stop = true;
    for (auto& t : threads) t.join();
    std::printf("appends, %d threads straight into the core (no gRPC/TLS): %.0f durable appends/s\n", clients,
                done / absl::ToDoubleSeconds(absl::Now() - start));
    log.Stop();
  }

  uint64_t n = absl::GetFlag(FLAGS_entries);
  std::string big = dir + "/big.db";
  NoteSigner signer = *NoteSigner::FromSeed("ppn.bench/ledger", std::string(32, 'b'));
  {
    auto store = *LedgerStore::Open(big);
    MerkleLog log(store.get(), signer, RealClock::Get(), MerkleLog::Options{"ppn.bench/ledger"});
    if (!log.Start().ok()) return 1;
    log.Stop();
    absl::Time start = absl::Now();
    v1::Entry e;
    e.set_kind("tenant.vm.create");
    e.set_actor("spiffe://ppn.bench/tenant-proxy/tenant-proxy");
    e.set_tenant_id("bench");
    e.set_outcome(v1::OUTCOME_SUCCESS);
    for (uint64_t done = 0; done < n;) {
      std::vector<NewLeaf> batch;
      for (; batch.size() < 10000 && done < n; ++done) {
        e.set_subject("vm-" + std::to_string(done));
        e.mutable_append_time()->set_seconds(1795000000 + done);
        batch.push_back({EncodeLeaf(e), e.kind(), ""});
      }
      if (!store->Append(batch).ok()) return 1;
    }
    std::printf("filled %llu entries in %.1f s (10,000 per transaction)\n", static_cast<unsigned long long>(n),
                absl::ToDoubleSeconds(absl::Now() - start));
    MerkleLog log2(store.get(), signer, RealClock::Get(), MerkleLog::Options{"ppn.bench/ledger"});
    if (!log2.Start().ok()) return 1;  // signs the checkpoint at n
    std::mt19937_64 rng(7);
    std::vector<double> micros;
    for (int i = 0; i < 20000; ++i) {
      uint64_t index = rng() % n;
      absl::Time t0 = absl::Now();
      auto proof = log2.ProveInclusion(index, 0);
      micros.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
      if (!proof.ok()) return 1;
    }
    std::printf("inclusion proof at %llu entries (core, 20,000 random leaves): p50 %.0f us, p99 %.0f us\n",
                static_cast<unsigned long long>(n), Percentile(micros, 0.5), Percentile(micros, 0.99));
    log2.Stop();
  }
  VerifyOptions options;
  options.verifier_key = signer.VerifierKey();
  absl::Time start = absl::Now();
  auto report = VerifyLedgerFile(big, options);
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("offline verify of %llu entries: %.2f s (%s)\n", static_cast<unsigned long long>(n), secs,
              report.ok() && report->ok ? "OK" : "FAILED");
  return 0;
}
