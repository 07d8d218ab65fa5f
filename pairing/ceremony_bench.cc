// ceremony_bench: one Genesis ceremony's machine time (no human), over real TLS on loopback,
// p50/p99 over 30 ceremonies. Not a test.  bazel run -c opt //pairing:ceremony_bench

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "common/clock.h"
#include "common/random.h"
#include "google/protobuf/util/time_util.h"
#include "pairing/pairing_services.h"
#include "pairing/short_code.h"
#include "pairing/wireguard.h"

int main() {
  using namespace ppn;           // NOLINT
  using namespace ppn::pairing;  // NOLINT
  std::string dir = "/tmp/ppn-ceremony-bench";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  AdminCore::Options o;
  o.mesh = "ppn.bench";
  o.ca = *x509::MakeCa("ppn.bench", absl::Hours(1));
  o.admin_peer.set_public_key(NewWireGuardKeys()->public_key);
  o.admin_peer.set_mesh_address("10.8.0.1");
  std::vector<double> total_ms, machine_ms;
  for (int i = 0; i < 30; ++i) {
    auto admin = *AdminCore::Create(
        o, dir + "/peers-" + std::to_string(i) + ".db",
        [](const ppn::ledger::v1::AppendRequest&) -> absl::StatusOr<uint64_t> { return 0; }, OpenSslRandom::Get());
    absl::Time t0 = absl::Now();
    // The joiner's own preparation: keys, CSR, code, ephemeral TLS.
    std::string key = *x509::GenerateKey();
    auto wg = *NewWireGuardKeys();
    auto tls = *EphemeralTlsIdentity("node");
    std::string code = *NewShortCode(*OpenSslRandom::Get());
    ppn::pairing::v1::EnrollmentRequest req;
    req.set_node_name("node");
    req.set_wireguard_public_key(wg.public_key);
    x509::CertRequest csr;
    csr.common_name = "node";
    req.set_csr_pem(*x509::MakeCsr(key, csr));
    JoinerCore::Options jo;
    jo.code = *ParseShortCode(code);
    jo.tls_fingerprint = *x509::Fingerprint(tls.cert_pem);
    JoinerCore joiner(jo, req, key, RealClock::Get(), OpenSslRandom::Get());
    JoinerService service(&joiner);
    auto server = *StartJoinerServer("127.0.0.1:0", tls, dir, &service);
    auto r = admin->Approve("127.0.0.1:" + std::to_string(server.port), code);
    if (!r.ok()) return 1;
    total_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    machine_ms.push_back(google::protobuf::util::TimeUtil::DurationToMicroseconds(r->elapsed()) / 1000.0);
    server.server->Shutdown();
  }
  auto pct = [](std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  };
  std::printf("admin side of a ceremony (connect, CPace, confirm, CSR signing, grant): p50 %.1f ms, p99 %.1f ms\n",
              pct(machine_ms, 0.5), pct(machine_ms, 0.99));
  std::printf("whole ceremony incl. the joiner's key generation and TLS listener: p50 %.1f ms, p99 %.1f ms\n",
              pct(total_ms, 0.5), pct(total_ms, 0.99));
  return 0;
}
