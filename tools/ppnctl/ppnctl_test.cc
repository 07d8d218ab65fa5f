#include <sys/wait.h>

#include <fstream>

#include "catch2/catch.hpp"
#include "common/clock.h"
#include "google/protobuf/descriptor.pb.h"
#include "ledger/ledger_server.h"
#include "nlohmann/json.hpp"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"
#include "tools/ppnctl/api.h"
#include "tools/ppnctl/request_builder.h"

namespace ppn::ppnctl {
namespace {

// Runs the real binary; returns {exit code, stdout+stderr}.
std::pair<int, std::string> Ppnctl(const std::vector<std::string>& args, const std::string& dir) {
  std::vector<std::string> argv = {ppn::testing::RunfilePath("tools/ppnctl/ppnctl")};
  argv.insert(argv.end(), args.begin(), args.end());
  ppn::testing::RunResult r = ppn::testing::Run(argv, dir + "/ppnctl.out", absl::Seconds(60));
  return {r.exit_code, r.output};
}

TEST_CASE("every RPC of every service in proto is a ppnctl command", "[ppnctl]") {
  google::protobuf::FileDescriptorSet set;
  std::ifstream in(ppn::testing::RunfilePath("proto/ppn_descriptors.pb"), std::ios::binary);
  REQUIRE(set.ParseFromIstream(&in));
  int rpcs = 0;
  for (const auto& file : set.file()) {
    if (file.package().rfind("ppn.", 0) != 0) continue;
    for (const auto& svc : file.service()) {
      std::string name = svc.name();
      if (name.size() > 7 && name.substr(name.size() - 7) == "Service") name = name.substr(0, name.size() - 7);
      for (const auto& m : svc.method()) {
        INFO(svc.name() << "." << m.name());
        auto cmd = Api::Get().Find(Kebab(name), Kebab(m.name()));
        REQUIRE(cmd.ok());
        CHECK((*cmd)->method->name() == m.name());
        ++rpcs;
      }
    }
  }
  CHECK(rpcs == static_cast<int>(Api::Get().commands().size()));
  CHECK(rpcs >= 35);
}

TEST_CASE("flags become nested repeated enum map and duration fields", "[ppnctl]") {
  ppn::tenancy::v1::CreateVmRequest req;
  REQUIRE(SetField(&req, "spec.display_name", "web").ok());
  REQUIRE(SetField(&req, "spec.memory_mib", "256").ok());
  REQUIRE(SetField(&req, "spec.ssh_authorized_keys", "ssh-ed25519 AAA a").ok());
  REQUIRE(SetField(&req, "spec.ssh_authorized_keys", "ssh-ed25519 BBB b").ok());
  REQUIRE(SetField(&req, "spec.port_forwards", "{\"guest_port\": 80, \"protocol\": \"PROTOCOL_TCP\"}").ok());
  REQUIRE(SetField(&req, "spec.labels", "team=web").ok());
  REQUIRE(SetField(&req, "spec.ttl", "1h30m").ok());
  CHECK(req.spec().display_name() == "web");
  CHECK(req.spec().memory_mib() == 256);
  CHECK(req.spec().ssh_authorized_keys_size() == 2);
  REQUIRE(req.spec().port_forwards_size() == 1);
  CHECK(req.spec().port_forwards(0).guest_port() == 80);
  CHECK(req.spec().labels().at("team") == "web");
  CHECK(req.spec().ttl().seconds() == 5400);

  ppn::fleet::v1::ListVmsRequest list;
  REQUIRE(SetField(&list, "include_stopped", "true").ok());
  CHECK(list.include_stopped());
  ppn::types::v1::MigrationProgress p;
  REQUIRE(SetField(&p, "phase", "completed").ok());
  CHECK(p.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  REQUIRE(SetField(&p, "phase", "MIGRATION_PHASE_FAILED").ok());
  CHECK(p.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);

  SECTION("mistakes are named") {
    absl::Status s = SetField(&req, "spec.memory", "1");
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("--spec.memory: no field \"memory\" in VmSpec") == 0);
    CHECK(std::string(SetField(&req, "spec.memory_mib", "lots").message()) ==
          "--spec.memory_mib: want a non-negative integer");
    CHECK(std::string(SetField(&p, "phase", "flying").message()).find("unknown value \"flying\"") != std::string::npos);
    CHECK(std::string(SetField(&req, "spec.ttl", "soon").message()).find("want a duration") != std::string::npos);
  }
}

TEST_CASE("help for an RPC lists its fields with their proto comments", "[ppnctl][golden]") {
  ppn::testing::TempDir dir;
  auto [code, out] = Ppnctl({"ledger", "get-inclusion-proof", "--help"}, dir.path());
  CHECK(code == 0);
  CHECK(out ==
        "ppnctl ledger get-inclusion-proof [--field=value ...]\n\n"
        "Proves that the entry at `leaf_index` is in the tree of size `tree_size`.\n\n"
        "Request fields (ppn.ledger.v1.GetInclusionProofRequest):\n"
        "  --leaf_index (uint64)  Leaf to prove.\n"
        "  --tree_size (uint64)  Tree size to prove against; 0 means the current size.\n");
  auto [code2, unknown] = Ppnctl({"ledger", "fly"}, dir.path());
  CHECK(code2 == 2);
  CHECK(unknown.find("unknown rpc \"fly\" of ledger; rpcs: append, append-batch, get-entries") == 0);
  auto [code3, completion] = Ppnctl({"completion", "bash"}, dir.path());
  CHECK(code3 == 0);
  CHECK(completion.find("complete -o nospace -F _ppnctl ppnctl") != std::string::npos);
  CHECK(completion.find("scheduler) COMPREPLY=($(compgen -W \"migrate drain rebalance pin unpin\"") !=
        std::string::npos);
}

TEST_CASE("ppnctl calls a real service, streams, and its JSON parses back", "[ppnctl][e2e]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki("ppn.test");
  auto store = *ledger::LedgerStore::Open(dir.File("ledger.db"));
  ledger::MerkleLog log(store.get(), *ledger::NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'c')),
                        RealClock::Get(), ledger::MerkleLog::Options{"ppn.test/ledger"});
  REQUIRE(log.Start().ok());
  ledger::LedgerService service(&log);
  StartedServer server = *ledger::StartLedgerServer("ppn.test", "127.0.0.1:0", pki.Issue("ledger", "ledger"), &service);
  TlsFiles op = pki.Issue("operator", "alice");
  std::vector<std::string> conn = {"--endpoint=127.0.0.1:" + std::to_string(server.port), "--ca=" + op.ca_cert,
                                   "--cert=" + op.cert, "--key=" + op.key};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), conn.begin(), conn.end());
    return a;
  };
  auto [code, out] = Ppnctl(with({"ledger", "append", "--kind=capability.grant", "--subject=cap-1", "--outcome=success",
                                  "--attributes=grantee=laptop-b", "-o", "json"}),
                            dir.path());
  INFO(out);
  REQUIRE(code == 0);
  nlohmann::json appended = nlohmann::json::parse(out);
  CHECK(appended["index"] == "0");  // uint64 is a string in proto JSON
  CHECK(appended["leaf_hash"].get<std::string>().size() == 44);

  auto [code2, streamed] = Ppnctl(with({"ledger", "watch-entries", "--timeout=2s", "-o", "json"}), dir.path());
  CHECK(code2 == 1);  // the stream runs until the deadline
  nlohmann::json entry = nlohmann::json::parse(streamed.substr(0, streamed.find('\n')));
  CHECK(entry["entry"]["subject"] == "cap-1");
  CHECK(entry["entry"]["actor"] == "spiffe://ppn.test/operator/alice");
  CHECK(streamed.find("DEADLINE_EXCEEDED") != std::string::npos);

  auto [code3, table] = Ppnctl(with({"ledger", "get-entries"}), dir.path());
  CHECK(code3 == 0);
  CHECK(table.rfind("ACTOR", 0) == 0);  // a list prints as a table
  auto [code4, denied] = Ppnctl(with({"ledger", "append", "--kind=tenant.vm.create", "--outcome=success"}), dir.path());
  CHECK(code4 == 1);
  CHECK(denied.find("PERMISSION_DENIED: role operator may not append entries of kind tenant.vm.create\n  meaning:") ==
        0);
  server.server->Shutdown();
  log.Stop();
}

}  // namespace
}  // namespace ppn::ppnctl
