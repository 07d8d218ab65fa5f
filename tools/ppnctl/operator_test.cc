// The operator's forms of the vm verbs over real sockets: ppnctl (the real binary, with an
// operator certificate) against a real fleet server on fake host agents. `vm list
// --all-tenants` is the table across tenants, `vm get|destroy --tenant T NAME` resolve a
// tenant's name, destroy needs --force, and the ledger's vm.destroy names the operator.

#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/ledger_outbox.h"
#include "common/random.h"
#include "common/tls_credentials.h"
#include "fleet/fleet_server.h"
#include "fleet/testing/fake_agent_client.h"
#include "grpcpp/create_channel.h"
#include "nlohmann/json.hpp"
#include "tests/harness/subprocess.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn::ppnctl {
namespace {

std::pair<int, std::string> Ppnctl(const std::vector<std::string>& args, const std::string& dir) {
  std::vector<std::string> argv = {"env", "-u", "PPNCTL_CONFIG", "HOME=" + dir,
                                   ppn::testing::RunfilePath("tools/ppnctl/ppnctl")};
  argv.insert(argv.end(), args.begin(), args.end());
  ppn::testing::RunResult r = ppn::testing::Run(argv, dir + "/ppnctl.out", absl::Seconds(60));
  return {r.exit_code, r.output};
}

struct Fleet {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki{"ppn.test"};
  fleet::testing::FakeAgentClientFactory agents;
  std::unique_ptr<fleet::VmStore> store = *fleet::VmStore::Open(dir.File("fleet.db"));
  absl::Mutex mu;
  std::vector<ppn::ledger::v1::AppendRequest> delivered;  // guarded by mu
  std::unique_ptr<LedgerOutbox> outbox =
      *LedgerOutbox::Open(dir.File("spool.db"), "fleet", [this](const ppn::ledger::v1::AppendRequest& r) {
        absl::MutexLock l(&mu);
        delivered.push_back(r);
        return absl::OkStatus();
      });
  fleet::FleetCore core{{store.get(), &agents, RealClock::Get(), OpenSslRandom::Get(), outbox.get()},
                        {absl::Seconds(10)}};
  fleet::FleetService service{&core};
  StartedServer server;
  std::unique_ptr<fleet::v1::FleetService::Stub> proxy;

  Fleet() {
    server = *fleet::StartFleetServer("ppn.test", "127.0.0.1:0", pki.Issue("fleet", "fleet"), &service);
    ppn::host::v1::Heartbeat hb;
    hb.set_node_id("laptop-a");
    hb.set_available_memory_mib(64 * 1024);
    hb.set_disk_total_mib(100 * 1024);
    hb.set_disk_available_mib(50 * 1024);
    hb.add_images("ppn-test-guest");
    core.AddNode("laptop-a", "unused:1");
    core.OnHeartbeat(hb);
    proxy = fleet::v1::FleetService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server.port), MtlsChannelCredentials(pki.Issue("tenant-proxy", "proxy"))));
  }
  ~Fleet() { server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1)); }

  fleet::v1::VmRecord Create(const std::string& tenant, const std::string& name) {
    fleet::v1::CreateVmRequest req;
    req.set_vm_id(name);
    req.mutable_spec()->set_vcpus(1);
    req.mutable_spec()->set_memory_mib(128);
    req.mutable_spec()->set_image("ppn-test-guest");
    fleet::v1::CreateVmResponse resp;
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-ppn-tenant-id", tenant);
    grpc::Status s = proxy->CreateVm(&ctx, req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp.vm();
  }
  // The operator's command line to this fleet, as alice.
  std::vector<std::string> As(std::vector<std::string> args) {
    TlsFiles op = pki.Issue("operator", "alice");
    for (std::string a : {"--endpoint=127.0.0.1:" + std::to_string(server.port), "--ca=" + op.ca_cert,
                          "--cert=" + op.cert, "--key=" + op.key}) {
      args.push_back(a);
    }
    return args;
  }
};

// Each line's words, so a test does not depend on how wide AGE came out.
std::vector<std::vector<std::string>> Words(const std::string& table) {
  std::vector<std::vector<std::string>> out;
  for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipEmpty())) {
    out.push_back(absl::StrSplit(line, ' ', absl::SkipEmpty()));
  }
  return out;
}

TEST_CASE("the operator lists every tenant's VMs with TENANT and NODE and destroys one by its tenant's name",
          "[ppnctl][e2e][operator]") {
  Fleet f;
  fleet::v1::VmRecord acme = f.Create("acme", "web");
  fleet::v1::VmRecord globex = f.Create("globex", "web");

  auto [code, table] = Ppnctl(f.As({"vm", "list", "--all-tenants"}), f.dir.path());
  INFO(table);
  REQUIRE(code == 0);
  auto rows = Words(table);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0] == std::vector<std::string>{"NAME", "TENANT", "STATE", "AGE", "ADDRESS", "NODE"});
  CHECK(rows[1] == std::vector<std::string>{"web", "acme", "RUNNING", rows[1][3], rows[1][4], "laptop-a"});
  CHECK(rows[2] == std::vector<std::string>{"web", "globex", "RUNNING", rows[2][3], rows[2][4], "laptop-a"});
  auto [code_f, filtered] =
      Ppnctl(f.As({"vm", "list", "--all-tenants", "--filter=state=RUNNING AND name=web", "-o", "wide"}), f.dir.path());
  INFO(filtered);
  CHECK(code_f == 0);
  CHECK(Words(filtered).size() == 3);
  CHECK(filtered.find(acme.vm_id()) != std::string::npos);  // -o wide: VM_ID
  auto [code_bad, bad] = Ppnctl(f.As({"vm", "list", "--all-tenants", "--filter=node=laptop-a"}), f.dir.path());
  CHECK(code_bad == 1);
  CHECK(bad.find("INVALID_ARGUMENT: filter: at position 1: expected a field (state, name or labels.KEY)") == 0);

  auto [code_g, got] = Ppnctl(f.As({"vm", "get", "--tenant", "globex", "web", "-o", "json"}), f.dir.path());
  INFO(got);
  REQUIRE(code_g == 0);
  CHECK(nlohmann::json::parse(got)["vm"]["vm_id"] == globex.vm_id());

  // Without --force nothing is called and nothing is destroyed.
  auto [code_nf, no_force] = Ppnctl(f.As({"vm", "destroy", "--tenant", "acme", "web"}), f.dir.path());
  CHECK(code_nf == 2);
  CHECK(no_force ==
        "ppnctl vm destroy NAME --tenant TENANT --force: --tenant acts on another tenant's VM, which needs --force\n");
  CHECK(f.agents.vms()["laptop-a"].size() == 2);

  auto [code_d, destroyed] = Ppnctl(f.As({"vm", "destroy", "--tenant", "acme", "web", "--force"}), f.dir.path());
  INFO(destroyed);
  REQUIRE(code_d == 0);
  auto drow = Words(destroyed);
  REQUIRE(drow.size() == 2);
  CHECK(drow[1][0] == "web");
  CHECK(drow[1][1] == "acme");
  CHECK(f.agents.vms()["laptop-a"] == std::set<std::string>{globex.vm_id()});  // only acme's went
  f.outbox->DeliverOnce();
  absl::MutexLock l(&f.mu);
  const ppn::ledger::v1::AppendRequest& last = f.delivered.back();
  CHECK(last.kind() == "vm.destroy");
  CHECK(last.subject() == acme.vm_id());
  CHECK(last.tenant_id() == "acme");
  CHECK(last.attributes().at("who") == "operator");
  CHECK(last.attributes().at("identity") == "spiffe://ppn.test/operator/alice");
}

}  // namespace
}  // namespace ppn::ppnctl
