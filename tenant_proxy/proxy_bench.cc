// proxy_bench: the latency the tenant proxy adds (authenticate + rate limit + quota + audit +
// forward), and authenticated requests per second. Not a test.
//
//   bazel run -c opt //tenant_proxy:proxy_bench
//
// The fleet is a fake served in-process over mTLS (tenant_proxy/testing), so both columns
// pay the same fleet cost and the difference is the proxy's; ledger delivery is a no-op, as
// it runs off the request path.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "common/clock.h"
#include "common/x509.h"
#include "grpcpp/create_channel.h"
#include "tenant_proxy/grpc_fleet_client.h"
#include "tenant_proxy/tenant_proxy_server.h"
#include "tenant_proxy/testing/fake_fleet_service.h"

namespace {

using namespace ppn;  // NOLINT

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

TlsFiles Issue(const x509::Identity& ca, const std::string& dir, const std::string& role) {
  x509::CertRequest req;
  req.common_name = role;
  req.spiffe_id = "spiffe://ppn.bench/" + role + "/" + role;
  req.dns_names = {"localhost"};
  req.ips = {"127.0.0.1"};
  auto id = *x509::Issue(ca, req);
  std::ofstream(dir + "/" + role + ".pem") << id.cert_pem;
  std::ofstream(dir + "/" + role + ".key") << id.key_pem;
  return {dir + "/ca.pem", dir + "/" + role + ".pem", dir + "/" + role + ".key"};
}

}  // namespace

int main() {
  std::string dir = "/tmp/ppn-proxy-bench";
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  auto ca = *x509::MakeCa("ppn.bench", absl::Hours(1));
  std::ofstream(dir + "/ca.pem") << ca.cert_pem;
  TlsFiles fleet_tls = Issue(ca, dir, "fleet"), proxy_tls = Issue(ca, dir, "tenant-proxy");

  proxy::testing::FakeFleetService fleet_service;
  StartedServer fleet_server = *proxy::testing::StartMeshFleet("ppn.bench", fleet_tls, &fleet_service);
  auto fleet_stub = ppn::fleet::v1::FleetService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(fleet_server.port), MtlsChannelCredentials(proxy_tls)));

  const std::string token = "bench-token-0123456789";
  ppn::tenancy::v1::ProxyConfig config;
  auto* t = config.add_tenants();
  t->set_tenant_id("bench");
  t->add_token_sha256(proxy::TokenHash(token));
  t->mutable_limits()->set_max_vms(100000);
  t->mutable_limits()->set_max_vcpus(100000);
  t->mutable_limits()->set_max_memory_mib(1 << 30);
  auto auth = *proxy::TokenAuthenticator::Create(config);
  auto audit = *proxy::AuditTrail::Open(dir + "/audit.jsonl", dir + "/spool.db", RealClock::Get(),
                                        [](const ppn::ledger::v1::AppendRequest&) { return absl::OkStatus(); });
  proxy::GrpcFleetClient fleet(fleet_stub.get());
  proxy::RateLimiter limiter(RealClock::Get());
  proxy::ProxyCore proxy_core(config, {&fleet, &limiter, audit.get()});
  proxy::TenantServiceImpl service(&auth, &proxy_core);
  StartedServer proxy_server = *proxy::StartTenantServer("127.0.0.1:0", proxy_tls, &auth, &service);
  auto tenant = ppn::tenancy::v1::TenantService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(proxy_server.port), TlsChannelCredentials(dir + "/ca.pem")));

  // One VM to read.
  ppn::tenancy::v1::CreateVmRequest create;
  create.mutable_spec()->set_display_name("first");
  create.mutable_spec()->set_vcpus(1);
  create.mutable_spec()->set_memory_mib(128);
  create.mutable_spec()->set_image("x");
  ppn::tenancy::v1::CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    if (!tenant->CreateVm(&ctx, create, &created).ok()) return 1;
  }
  const int n = 2000;
  std::vector<double> direct, proxied;
  for (int i = 0; i < n; ++i) {
    absl::Time t0 = absl::Now();
    {
      grpc::ClientContext ctx;
      ctx.AddMetadata("x-ppn-tenant-id", "bench");
      ppn::fleet::v1::GetVmRequest req;
      req.set_vm_id(created.vm().vm_id());
      ppn::fleet::v1::GetVmResponse resp;
      if (!fleet_stub->GetVm(&ctx, req, &resp).ok()) return 1;
    }
    absl::Time t1 = absl::Now();
    {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + token);
      ppn::tenancy::v1::GetVmRequest req;
      req.set_name(created.vm().name());
      ppn::tenancy::v1::GetVmResponse resp;
      if (!tenant->GetVm(&ctx, req, &resp).ok()) return 1;
    }
    absl::Time t2 = absl::Now();
    direct.push_back(absl::ToDoubleMicroseconds(t1 - t0));
    proxied.push_back(absl::ToDoubleMicroseconds(t2 - t1));
  }
  std::printf("GetVm straight to the fleet: p50 %.0f us, p99 %.0f us\n", Pct(direct, 0.5), Pct(direct, 0.99));
  std::printf("GetVm through the proxy:     p50 %.0f us, p99 %.0f us  => added p50 %.0f us, p99 %.0f us\n",
              Pct(proxied, 0.5), Pct(proxied, 0.99), Pct(proxied, 0.5) - Pct(direct, 0.5),
              Pct(proxied, 0.99) - Pct(direct, 0.99));

  std::vector<double> creates;
  for (int i = 0; i < 200; ++i) {
    create.mutable_spec()->set_display_name("vm-" + std::to_string(i));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    absl::Time t0 = absl::Now();
    if (!tenant->CreateVm(&ctx, create, &created).ok()) return 1;
    creates.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  std::printf(
      "CreateVm through the proxy (quota list + fleet create + two audit fsyncs, fake fleet): p50 %.1f ms, p99 %.1f "
      "ms\n",
      Pct(creates, 0.5) / 1000, Pct(creates, 0.99) / 1000);

  std::atomic<int> done{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < 16; ++c) {
    threads.emplace_back([&] {
      while (!stop) {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer " + token);
        ppn::tenancy::v1::GetVmRequest req;
        req.set_name(created.vm().name());
        ppn::tenancy::v1::GetVmResponse resp;
        if (tenant->GetVm(&ctx, req, &resp).ok()) ++done;
      }
    });
  }
  absl::SleepFor(absl::Seconds(5));
  stop = true;
  for (auto& th : threads) th.join();
  std::printf("authenticated GetVm through the proxy, 16 concurrent clients: %.0f requests/s\n", done / 5.0);
  proxy_server.server->Shutdown();
  fleet_server.server->Shutdown();
  return 0;
}
