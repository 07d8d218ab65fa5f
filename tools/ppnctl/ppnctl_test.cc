#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/spiffe_id.h"
#include "common/tls_credentials.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/server_builder.h"
#include "ledger/ledger_server.h"
#include "nlohmann/json.hpp"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/tenancy/v1/tenant_service.grpc.pb.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"
#include "tools/ppnctl/api.h"
#include "tools/ppnctl/request_builder.h"

namespace ppn::ppnctl {
namespace {

// Runs the real binary with HOME=`dir` (its config and known ledgers live there) and a
// tenant token in the environment; returns {exit code, stdout+stderr}.
std::pair<int, std::string> Ppnctl(const std::vector<std::string>& args, const std::string& dir) {
  std::vector<std::string> argv = {"env",
                                   "-u",
                                   "PPNCTL_CONFIG",
                                   "HOME=" + dir,
                                   "PPN_TOKEN=test-token",
                                   ppn::testing::RunfilePath("tools/ppnctl/ppnctl")};
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
  CHECK(completion.find("complete -F _ppnctl ppnctl") != std::string::npos);
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
  auto [code_y, yaml] = Ppnctl(with({"ledger", "watch-entries", "--timeout=2s", "-oyaml"}), dir.path());
  CHECK(code_y == 1);
  CHECK(yaml.rfind("---\nentry:\n", 0) == 0);  // a stream in YAML is a stream of documents

  {
    // Ctrl-C during a stream cancels the call and exits 130, without an error explained.
    std::vector<std::string> argv = {"env", "-u", "PPNCTL_CONFIG", "HOME=" + dir.path(),
                                     ppn::testing::RunfilePath("tools/ppnctl/ppnctl")};
    for (const std::string& a : with({"ledger", "watch-entries", "-o", "json"})) argv.push_back(a);
    std::string log = dir.File("interrupted.out");
    ppn::testing::Subprocess tail(argv, log);
    absl::Time until = absl::Now() + absl::Seconds(30);
    while (ppn::testing::ReadAll(log).find("cap-1") == std::string::npos && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    tail.Signal(SIGINT);
    int status = tail.Wait(absl::Seconds(20));
    std::string out = ppn::testing::ReadAll(log);
    INFO(out);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 130);
    CHECK(out.find("meaning:") == std::string::npos);
  }

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

// A gRPC server that answers every method of every service with UNIMPLEMENTED and records
// each call it receives: ppnctl pointed at it shows whether a command line called anything.
class CountingServer {
 public:
  explicit CountingServer(const TlsFiles& tls) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", TlsServerCredentials(tls), &port_);
    builder.RegisterCallbackGenericService(&service_);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
  }
  ~CountingServer() { server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5)); }
  int port() const { return port_; }
  std::vector<std::string> Calls() { return service_.Calls(); }

 private:
  class Service final : public grpc::CallbackGenericService {
   public:
    grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
      {
        absl::MutexLock l(&mu_);
        calls_.push_back(ctx->method());
      }
      class Refuse final : public grpc::ServerGenericBidiReactor {
       public:
        Refuse() { Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "counted, not served")); }
        void OnDone() override { delete this; }
      };
      return new Refuse;
    }
    std::vector<std::string> Calls() {
      absl::MutexLock l(&mu_);
      return calls_;
    }

   private:
    absl::Mutex mu_;
    std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  };
  Service service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_CASE("help anywhere and unknown words or flags call nothing", "[ppnctl][e2e]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki("ppn.test");
  CountingServer server(pki.Issue("fleet", "fleet"));
  TlsFiles op = pki.Issue("operator", "alice");
  std::vector<std::string> conn = {"--endpoint=127.0.0.1:" + std::to_string(server.port()), "--ca=" + op.ca_cert,
                                   "--cert=" + op.cert, "--key=" + op.key};
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.end(), conn.begin(), conn.end());
    return Ppnctl(args, dir.path());
  };

  SECTION("the server counts what is called") {
    auto [code, out] = run({"vm", "create", "web"});
    INFO(out);
    CHECK(code == 1);
    CHECK(out.find("UNIMPLEMENTED: counted, not served") == 0);
    auto [code2, out2] = run({"node", "drain", "laptop-a"});
    CHECK(code2 == 1);
    CHECK(server.Calls() ==
          std::vector<std::string>{"/ppn.tenancy.v1.TenantService/CreateVm", "/ppn.scheduler.v1.Scheduler/Drain"});
  }

  SECTION("help prints help and calls nothing") {
    for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
             {"vm", "create", "x", "--help"},
             {"vm", "create", "x", "-h"},
             {"vm", "create", "--spec.memory_mib=64", "-h", "x"},
             {"--help", "vm", "destroy", "vms/x"},
             {"migrate", "vm-1", "--help"},
             {"migrate", "vm-1", "--to", "-h"},
             {"node", "drain", "laptop-a", "--help"},
             {"node", "approve", "127.0.0.1:7105", "--code", "ABCD-EFGH-J", "--help"},
             {"pin", "vm-1", "laptop-a", "-h"},
             {"unpin", "vm-1", "--help=true"},
             {"scheduler", "migrate", "--vm_id=vm-1", "--help"},
             {"fleet", "list-vms", "-h"},
             {"ledger", "verify", "--help"},
             {"config", "set-context", "x", "--ca=ca.pem", "--help"},
             {"config", "use-context", "x", "-h"},
             {"version", "--help"},
             {"help", "vm", "create"},
         }) {
      auto [code, out] = run(args);
      INFO(absl::StrJoin(args, " ") << "\n" << out);
      CHECK(code == 0);
      CHECK(out.rfind("ppnctl ", 0) == 0);
    }
    auto [code, out] = run({"migrate", "vm-1", "--help"});
    CHECK(out.find("ppnctl migrate VM [--to NODE]\n\nlive-migrates VM") == 0);
    CHECK(out.find("  --to sets --target_node_id\n") != std::string::npos);
    CHECK(server.Calls().empty());
    CHECK_FALSE(std::filesystem::exists(dir.File(".config/ppnctl/config")));  // help wrote no context
  }

  SECTION("unknown flags and words are errors that call nothing") {
    struct Case {
      std::vector<std::string> args;
      std::string message;
    };
    for (const Case& c : std::vector<Case>{
             {{"vm", "create", "x", "--spec.memory=64"},
              "unknown flag --spec.memory for ppnctl vm create NAME [--spec.memory_mib=N] [--spec.image=I] [--wait] "
              "(did you "
              "mean \"--spec.memory_mib\"?)"},
             {{"migrate", "vm-1", "--too", "laptop-b"},
              "unknown flag --too for ppnctl migrate VM [--to NODE] (did you "
              "mean \"--to\"?)"},
             {{"node", "drain", "laptop-a", "--dryrun"},
              "unknown flag --dryrun for ppnctl node drain NODE [--dry_run] "
              "(did you mean \"--dry_run\"?)"},
             {{"fleet", "list-vms", "--include_stoped"},
              "unknown flag --include_stoped for ppnctl fleet list-vms (did "
              "you mean \"--include_stopped\"?)"},
             {{"ledger", "verify", "--ledger_kye=x"}, "unknown flag --ledger_kye (did you mean \"--ledger_key\"?)"},
             {{"vm", "list", "-x"}, "unknown flag \"-x\""},
             {{"vm", "create", "x", "y"}, "unexpected argument \"y\"; usage: ppnctl vm create NAME"},
             {{"vm", "craete", "x"}, "unknown verb \"vm craete\" (did you mean \"vm create\"?)"},
             {{"node", "drian", "laptop-a"}, "unknown verb \"node drian\" (did you mean \"node drain\"?)"},
             {{"migrate"}, "missing VM; usage: ppnctl migrate VM [--to NODE]"},
             {{"fleet", "get-vn"}, "unknown rpc \"get-vn\" of fleet (did you mean \"get-vm\"?)"},
             {{"scheduler", "drain", "laptop-a"}, "unexpected argument \"laptop-a\""},
             {{"vmm", "list"}, "unknown verb \"vmm\" (did you mean \"vm\"?)"},
             {{"vm"}, "vm needs a verb or an rpc"},
         }) {
      auto [code, out] = run(c.args);
      INFO(absl::StrJoin(c.args, " ") << "\n" << out);
      CHECK(code == 2);
      CHECK(out.rfind(c.message, 0) == 0);
    }
    CHECK(server.Calls().empty());
  }
}

// The tenant API reduced to one running VM: GetVm shows it, UpdateVmNetwork gives it the
// policy asked and records the request. Every call must carry ppnctl's token.
class OneVmTenantApi final : public ppn::tenancy::v1::TenantService::Service {
 public:
  OneVmTenantApi() {
    vm_.set_name("vms/vm-1");
    vm_.set_vm_id("vm-1");
    vm_.mutable_spec()->set_display_name("web");
    vm_.set_state(ppn::types::v1::VM_STATE_RUNNING);
    vm_.mutable_network()->set_tx_bytes(4096);
    vm_.mutable_network()->set_tx_packets(3);
    vm_.mutable_network()->set_rx_bytes(1);
    vm_.mutable_network()->set_rx_packets(1);
  }
  grpc::Status GetVm(grpc::ServerContext* ctx, const ppn::tenancy::v1::GetVmRequest* req,
                     ppn::tenancy::v1::GetVmResponse* resp) override {
    if (!Authorized(*ctx)) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no token");
    absl::MutexLock l(&mu_);
    if (req->name() != vm_.name()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "vm not found");
    *resp->mutable_vm() = vm_;
    return grpc::Status::OK;
  }
  grpc::Status UpdateVmNetwork(grpc::ServerContext* ctx, const ppn::tenancy::v1::UpdateVmNetworkRequest* req,
                               ppn::tenancy::v1::UpdateVmNetworkResponse* resp) override {
    if (!Authorized(*ctx)) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no token");
    absl::MutexLock l(&mu_);
    updates_.push_back(*req);
    *vm_.mutable_spec()->mutable_egress() = req->egress();
    *resp->mutable_vm() = vm_;
    return grpc::Status::OK;
  }
  grpc::Status StartVm(grpc::ServerContext* ctx, const ppn::tenancy::v1::StartVmRequest* req,
                       ppn::tenancy::v1::StartVmResponse* resp) override {
    if (!Authorized(*ctx)) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no token");
    absl::MutexLock l(&mu_);
    starts_.push_back(*req);
    *resp->mutable_vm() = vm_;
    return grpc::Status::OK;
  }
  std::vector<ppn::tenancy::v1::StartVmRequest> starts() {
    absl::MutexLock l(&mu_);
    return starts_;
  }
  std::vector<ppn::tenancy::v1::UpdateVmNetworkRequest> updates() {
    absl::MutexLock l(&mu_);
    return updates_;
  }
  // A new VM is PENDING; watching it shows STARTING then RUNNING, then the stream stays open
  // (as a real one does) until the client goes.
  grpc::Status CreateVm(grpc::ServerContext* ctx, const ppn::tenancy::v1::CreateVmRequest*,
                        ppn::tenancy::v1::CreateVmResponse* resp) override {
    if (!Authorized(*ctx)) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no token");
    resp->mutable_vm()->set_name("vms/vm-2");
    resp->mutable_vm()->set_state(ppn::types::v1::VM_STATE_PENDING);
    return grpc::Status::OK;
  }
  grpc::Status WatchVm(grpc::ServerContext* ctx, const ppn::tenancy::v1::WatchVmRequest* req,
                       grpc::ServerWriter<ppn::tenancy::v1::WatchVmResponse>* writer) override {
    if (!Authorized(*ctx)) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no token");
    for (auto state : {ppn::types::v1::VM_STATE_STARTING, ppn::types::v1::VM_STATE_RUNNING}) {
      ppn::tenancy::v1::WatchVmResponse r;
      r.mutable_vm()->set_name(req->name());
      r.mutable_vm()->set_state(state);
      writer->Write(r);
    }
    while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(20));
    return grpc::Status::CANCELLED;
  }

 private:
  static bool Authorized(const grpc::ServerContext& ctx) {
    auto it = ctx.client_metadata().find("authorization");
    return it != ctx.client_metadata().end() &&
           std::string(it->second.data(), it->second.size()) == "Bearer test-token";
  }
  absl::Mutex mu_;
  ppn::tenancy::v1::Vm vm_ ABSL_GUARDED_BY(mu_);
  std::vector<ppn::tenancy::v1::UpdateVmNetworkRequest> updates_ ABSL_GUARDED_BY(mu_);
  std::vector<ppn::tenancy::v1::StartVmRequest> starts_ ABSL_GUARDED_BY(mu_);
};

TEST_CASE("vm start --fresh-disk asks for a fresh disk; without it the start does not", "[ppnctl][e2e][power]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki("ppn.test");
  OneVmTenantApi api;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", TlsServerCredentials(pki.Issue("tenant-proxy", "proxy")), &port);
  builder.RegisterService(&api);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  std::vector<std::string> conn = {"--endpoint=127.0.0.1:" + std::to_string(port), "--ca=" + pki.ca_cert_path()};
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.end(), conn.begin(), conn.end());
    return Ppnctl(args, dir.path());
  };
  auto [code, out] = run({"vm", "start", "vms/vm-1", "--fresh-disk"});
  INFO(out);
  REQUIRE(code == 0);
  auto [code2, out2] = run({"vm", "start", "vms/vm-1"});
  INFO(out2);
  REQUIRE(code2 == 0);
  auto starts = api.starts();
  REQUIRE(starts.size() == 2);
  CHECK(starts[0].name() == "vms/vm-1");
  CHECK(starts[0].fresh_disk());
  CHECK_FALSE(starts[1].fresh_disk());
  server->Shutdown();
}

TEST_CASE("vm egress replaces a VM's policy from short flags and vm get shows it and the traffic",
          "[ppnctl][e2e][golden][egress]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki("ppn.test");
  OneVmTenantApi api;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", TlsServerCredentials(pki.Issue("tenant-proxy", "proxy")), &port);
  builder.RegisterService(&api);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  std::vector<std::string> conn = {"--endpoint=127.0.0.1:" + std::to_string(port), "--ca=" + pki.ca_cert_path()};
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.end(), conn.begin(), conn.end());
    return Ppnctl(args, dir.path());
  };
  const std::string summary =
      "egress: internet denied; allow 203.0.113.0/24:443, 198.51.100.7:5000-5100/udp; deny 203.0.113.66; rate "
      "limit 5000 kbit/s\n"
      "traffic: sent 4096 bytes (3 packets), received 1 byte (1 packet)\n";

  auto [code, out] = run({"vm", "egress", "vms/vm-1", "--internet=deny", "--allow=203.0.113.0/24:443",
                          "--allow=198.51.100.7:5000-5100/udp", "--deny", "203.0.113.66", "--rate-limit-kbit=5000"});
  INFO(out);
  REQUIRE(code == 0);
  CHECK(out.rfind("NAME      STATE    AGE  ADDRESS\nvms/vm-1  RUNNING  -    -\n", 0) == 0);
  REQUIRE(out.size() > summary.size());
  CHECK(out.substr(out.size() - summary.size()) == summary);
  auto updates = api.updates();
  REQUIRE(updates.size() == 1);
  CHECK(updates[0].name() == "vms/vm-1");
  CHECK(updates[0].egress().allow_size() == 2);
  CHECK(updates[0].egress().allow(1).protocol() == ppn::types::v1::PROTOCOL_UDP);
  CHECK(updates[0].egress().deny(0).cidr() == "203.0.113.66");
  CHECK(updates[0].egress().rate_limit_kbit() == 5000);

  auto [code2, got] = run({"vm", "get", "vms/vm-1"});
  INFO(got);
  CHECK(code2 == 0);
  REQUIRE(got.size() > summary.size());
  CHECK(got.substr(got.size() - summary.size()) == summary);
  auto [code3, json] = run({"vm", "get", "vms/vm-1", "-o", "json"});
  CHECK(code3 == 0);
  nlohmann::json doc = nlohmann::json::parse(json);  // a format asked for: no summary lines
  CHECK(doc["vm"]["spec"]["egress"]["rate_limit_kbit"] == "5000");
  CHECK(doc["vm"]["network"]["tx_bytes"] == "4096");

  auto [code_v, trace] = run({"-v", "vm", "get", "vms/vm-1"});
  INFO(trace);
  CHECK(code_v == 0);
  CHECK(trace.find("/ppn.tenancy.v1.TenantService/GetVm\n") != std::string::npos);
  CHECK(trace.find("> authorization: Bearer <redacted>\n") != std::string::npos);
  CHECK(trace.find("> {\"name\":\"vms/vm-1\"}\n") != std::string::npos);
  CHECK(trace.find("< {\"vm\":") != std::string::npos);
  CHECK(trace.find("< status: OK\n") != std::string::npos);
  CHECK(trace.find("test-token") == std::string::npos);  // the token is never printed

  auto [code_w, waited] = run({"vm", "create", "web", "--wait"});
  INFO(waited);
  CHECK(code_w == 0);
  CHECK(waited.find("vms/vm-2  PENDING") != std::string::npos);
  CHECK(waited.find("vms/vm-2 STARTING after ") != std::string::npos);
  CHECK(waited.find("vms/vm-2 RUNNING after ") != std::string::npos);
  CHECK(waited.find('\r') == std::string::npos);  // not a terminal: plain lines
  CHECK(waited.find('\033') == std::string::npos);

  auto [code4, bad] = run({"vm", "egress", "vms/vm-1", "--deny=10.0.0.0/33"});
  CHECK(code4 == 2);
  CHECK(bad ==
        "--deny: egress.deny rule \"10.0.0.0/33\" is not an IPv4 address or CIDR; want CIDR[:PORT[-PORT]][/udp], "
        "e.g. 203.0.113.0/24:443\n");
  CHECK(api.updates().size() == 1);  // nothing was called

  auto [code5, help] = run({"vm", "egress", "--help"});
  CHECK(code5 == 0);
  CHECK(help.rfind("ppnctl vm egress NAME [--internet=allow|deny] [--allow=CIDR[:PORT[-PORT]][/udp]]... "
                   "[--deny=CIDR[:PORT[-PORT]][/udp]]... [--rate-limit-kbit=N]\n\nreplaces what one of your running "
                   "VMs may reach, live",
                   0) == 0);
  CHECK(help.find("  --allow sets --egress.allow\n") != std::string::npos);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

// A real ledger on 127.0.0.1:0 signing with a key from `seed`, holding `subjects` as entries.
struct RealLedger {
  RealLedger(ppn::testing::TestPki& pki, char seed, const std::vector<std::string>& subjects)
      : store(*ledger::LedgerStore::Open(dir.File("ledger.db"))),
        signer(*ledger::NoteSigner::FromSeed("ppn.test/ledger", std::string(32, seed))),
        log(store.get(), signer, RealClock::Get(), ledger::MerkleLog::Options{"ppn.test/ledger"}),
        service(&log) {
    REQUIRE(log.Start().ok());
    Append(subjects);
    server = *ledger::StartLedgerServer("ppn.test", "127.0.0.1:0", pki.Issue("ledger", "ledger"), &service);
  }
  ~RealLedger() {
    server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    log.Stop();
  }
  void Append(const std::vector<std::string>& subjects) {
    SpiffeId proxy = *ParseSpiffeId("spiffe://ppn.test/tenant-proxy/proxy");
    for (const std::string& s : subjects) {
      ppn::ledger::v1::AppendRequest r;
      r.set_kind("tenant.vm.create");
      r.set_tenant_id("acme");
      r.set_subject(s);
      r.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
      REQUIRE(log.Append(proxy, r).ok());
    }
  }
  std::string endpoint() const { return "--endpoint=127.0.0.1:" + std::to_string(server.port); }

  ppn::testing::TempDir dir;
  std::unique_ptr<ledger::LedgerStore> store;
  ledger::NoteSigner signer;
  ledger::MerkleLog log;
  ledger::LedgerService service;
  StartedServer server;
};

TEST_CASE("ledger verify pins the first ledger and refuses another one or a rewritten history", "[ppnctl][e2e]") {
  ppn::testing::TempDir home;
  ppn::testing::TestPki pki("ppn.test");
  TlsFiles op = pki.Issue("operator", "alice");
  auto verify = [&](const RealLedger& l, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        "ledger", "verify", l.endpoint(), "--ca=" + op.ca_cert, "--cert=" + op.cert, "--key=" + op.key};
    args.insert(args.end(), extra.begin(), extra.end());
    return Ppnctl(args, home.path());
  };
  const std::string known = home.File(".config/ppnctl/known_ledgers");

  RealLedger first(pki, 'a', {"vm-1", "vm-2", "vm-3"});
  const std::string key = first.signer.VerifierKey();
  auto [code, out] = verify(first);
  INFO(out);
  REQUIRE(code == 0);
  CHECK(out.find("first use: pinned key " + key + " for ledger ppn.test/ledger (in " + known) != std::string::npos);
  CHECK(out.find("OK 3 entries of ledger ppn.test/ledger reproduce its checkpoint, signed by key " + key + "\n") !=
        std::string::npos);
  CHECK(ppn::testing::ReadAll(known).find("ppn.test/ledger " + key + " 3 ") != std::string::npos);

  first.Append({"vm-4", "vm-5"});
  auto [code2, grown] = verify(first);
  INFO(grown);
  CHECK(code2 == 0);
  CHECK(grown.find("first use") == std::string::npos);
  CHECK(grown.find("OK 5 entries") != std::string::npos);
  CHECK(grown.find("consistent with the checkpoint of size 3 verified before") != std::string::npos);
  const std::string remembered = ppn::testing::ReadAll(known);

  SECTION("a second ledger with its own key") {
    RealLedger second(pki, 'b', {"vm-1", "vm-2", "vm-3", "vm-4", "vm-5", "vm-6"});
    auto [code3, other] = verify(second);
    INFO(other);
    CHECK(code3 == 1);
    CHECK(other.find("FAILED ledger \"ppn.test/ledger\" is pinned to key " + key) == 0);
    CHECK(other.find("(the ledger presents key " + second.signer.VerifierKey() + ")") != std::string::npos);
    CHECK(ppn::testing::ReadAll(known) == remembered);
    SECTION("even with its key given: its history is not the one verified") {
      auto [code4, keyed] = verify(second, {"--ledger_key=" + second.signer.VerifierKey()});
      INFO(keyed);
      CHECK(code4 == 1);
      CHECK(keyed.find("FAILED ledger \"ppn.test/ledger\"'s checkpoint at size 6 is not consistent with the "
                       "checkpoint verified before (size 5") == 0);
    }
  }
  SECTION("the same key over a rewritten history") {
    RealLedger rewritten(pki, 'a', {"vm-1", "vm-2", "forged", "vm-4", "vm-5", "vm-6", "vm-7"});
    auto [code3, forged] = verify(rewritten);
    INFO(forged);
    CHECK(code3 == 1);
    CHECK(forged.find("FAILED ledger \"ppn.test/ledger\"'s checkpoint at size 7 is not consistent with the "
                      "checkpoint verified before (size 5") == 0);
    CHECK(forged.find("its history was rewritten") != std::string::npos);
    CHECK(ppn::testing::ReadAll(known) == remembered);
  }
}

}  // namespace
}  // namespace ppn::ppnctl
