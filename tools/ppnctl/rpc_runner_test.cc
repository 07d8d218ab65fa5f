#include "tools/ppnctl/rpc_runner.h"

#include "catch2/catch.hpp"
#include "ppn/scheduler/v1/scheduler_service.pb.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"
#include "tools/ppnctl/egress.h"

namespace ppn::ppnctl {
namespace {

const Verb& Create() {
  static const auto* v = new Verb(Verb({"vm", "create"})
                                      .Args({"NAME"})
                                      .Calls("tenant", "create-vm")
                                      .ArgFields({"spec.display_name"})
                                      .Defaults({{"spec.memory_mib", "128"},
                                                 {"spec.image", "ppn-test-guest"},
                                                 {"spec.port_forwards", "{\"guest_port\":80}"}}));
  return *v;
}

const Verb& Migrate() {
  static const auto* v = new Verb(
      Verb({"migrate"}).Args({"VM"}).Calls("scheduler", "migrate").ArgFields({"vm_id"}).Alias("to", "target_node_id"));
  return *v;
}

const Verb& Egress() {
  static const auto* v = new Verb(Verb({"vm", "egress"})
                                      .Args({"NAME"})
                                      .Calls("tenant", "update-vm-network")
                                      .ArgFields({"name"})
                                      .Alias("internet", "egress.internet", InternetFlagValue)
                                      .Alias("allow", "egress.allow", AllowFlagValue)
                                      .Alias("deny", "egress.deny", DenyFlagValue)
                                      .Alias("rate-limit-kbit", "egress.rate_limit_kbit"));
  return *v;
}

Settings Unconfigured() {
  return *Settings::Load({{"endpoint", "127.0.0.1:1"}}, [](const std::string&) { return std::nullopt; }, {});
}

template <typename T>
T As(const google::protobuf::Message& m) {
  T typed;
  REQUIRE(typed.ParseFromString(m.SerializeAsString()));
  return typed;
}

Invocation Of(const Verb& verb, std::vector<std::string> args, std::vector<std::pair<std::string, std::string>> flags,
              const Settings* settings = nullptr) {
  return Invocation{&verb, *Api::Get().Find(verb.service, verb.rpc), std::move(args), std::move(flags), settings};
}

TEST_CASE("a verb's request is its defaults its arguments then its flags", "[ppnctl][rpc_runner]") {
  auto request = BuildRequest(Of(Create(), {"web"}, {{"spec.memory_mib", "256"}}), Api::Get());
  REQUIRE(request.ok());
  auto create = As<ppn::tenancy::v1::CreateVmRequest>(**request);
  CHECK(create.spec().display_name() == "web");
  CHECK(create.spec().memory_mib() == 256);
  CHECK(create.spec().image() == "ppn-test-guest");
  REQUIRE(create.spec().port_forwards_size() == 1);

  SECTION("a flag naming a repeated default replaces it rather than adding to it") {
    auto replaced = BuildRequest(Of(Create(), {"web"}, {{"spec.port_forwards", "{\"guest_port\":22}"}}), Api::Get());
    auto r = As<ppn::tenancy::v1::CreateVmRequest>(**replaced);
    REQUIRE(r.spec().port_forwards_size() == 1);
    CHECK(r.spec().port_forwards(0).guest_port() == 22);
  }
  SECTION("an alias sets its field") {
    auto migrate = BuildRequest(Of(Migrate(), {"vm-1"}, {{"to", "laptop-b"}}), Api::Get());
    auto m = As<ppn::scheduler::v1::MigrateRequest>(**migrate);
    CHECK(m.vm_id() == "vm-1");
    CHECK(m.target_node_id() == "laptop-b");
  }
}

TEST_CASE("an alias with a converter writes its field the short way", "[ppnctl][rpc_runner][egress]") {
  auto request = BuildRequest(Of(Egress(), {"vms/vm-1"},
                                 {{"internet", "deny"},
                                  {"allow", "203.0.113.0/24:443"},
                                  {"allow", "198.51.100.7:5000-5100/udp"},
                                  {"deny", "203.0.113.66"},
                                  {"rate-limit-kbit", "5000"}}),
                              Api::Get());
  REQUIRE(request.ok());
  auto r = As<ppn::tenancy::v1::UpdateVmNetworkRequest>(**request);
  CHECK(r.name() == "vms/vm-1");
  CHECK(r.egress().internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
  REQUIRE(r.egress().allow_size() == 2);
  CHECK(r.egress().allow(0).cidr() == "203.0.113.0/24");
  CHECK(r.egress().allow(0).port_first() == 443);
  CHECK(r.egress().allow(1).port_last() == 5100);
  CHECK(r.egress().allow(1).protocol() == ppn::types::v1::PROTOCOL_UDP);
  REQUIRE(r.egress().deny_size() == 1);
  CHECK(r.egress().deny(0).port_first() == 0);
  CHECK(r.egress().rate_limit_kbit() == 5000);
  // The long way still works beside it.
  auto json = BuildRequest(Of(Egress(), {"vm-1"}, {{"egress.allow", "{\"cidr\":\"10.0.0.1\"}"}}), Api::Get());
  REQUIRE(json.ok());
  CHECK(As<ppn::tenancy::v1::UpdateVmNetworkRequest>(**json).egress().allow(0).cidr() == "10.0.0.1");

  auto bad = BuildRequest(Of(Egress(), {"vm-1"}, {{"allow", "10.0.0.1:99999"}}), Api::Get());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bad.status().message() ==
        "--allow: \"10.0.0.1:99999\" has a port that is not 1-65535; want CIDR[:PORT[-PORT]][/udp], e.g. "
        "203.0.113.0/24:443");
  CHECK(BuildRequest(Of(Egress(), {"vm-1"}, {{"internet", "off"}}), Api::Get()).status().message() ==
        "--internet: \"off\": want allow or deny");
  Settings settings = Unconfigured();
  CHECK(RunRpc(Of(Egress(), {"vm-1"}, {{"deny", "10.0.0.0/33"}}, &settings)) == kExitUsage);
}

TEST_CASE("an unknown flag is refused with the nearest known one", "[ppnctl][rpc_runner]") {
  auto bad = BuildRequest(Of(Create(), {"web"}, {{"spec.memory", "256"}}), Api::Get());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bad.status().message() ==
        "unknown flag --spec.memory for ppnctl vm create NAME (did you mean \"--spec.memory_mib\"?); --help lists "
        "its flags");
  auto alias = BuildRequest(Of(Migrate(), {"vm-1"}, {{"too", "laptop-b"}}), Api::Get());
  CHECK(alias.status().message().find("unknown flag --too for ppnctl migrate VM (did you mean \"--to\"?)") == 0);
  const Command* rpc = *Api::Get().Find("fleet", "list-vms");
  auto generated = BuildRequest(Invocation{nullptr, rpc, {}, {{"include_stoped", "true"}}, nullptr}, Api::Get());
  CHECK(generated.status().message().find(
            "unknown flag --include_stoped for ppnctl fleet list-vms (did you mean \"--include_stopped\"?)") == 0);
  CHECK(BuildRequest(Of(Create(), {"web"}, {{"spec.memory_mib", "lots"}}), Api::Get()).status().message() ==
        "--spec.memory_mib: want a non-negative integer");
}

TEST_CASE("a mistake on the command line exits 2 before any connection is made", "[ppnctl][rpc_runner]") {
  Settings settings = Unconfigured();
  CHECK(RunRpc(Of(Create(), {"web"}, {{"bogus", "1"}}, &settings)) == kExitUsage);
  CHECK(RunRpc(Of(Create(), {"web"}, {{"spec.vcpus", "-1"}}, &settings)) == kExitUsage);
  Settings bad_output = *Settings::Load({{"output", "xml"}}, [](const std::string&) { return std::nullopt; }, {});
  CHECK(RunRpc(Of(Migrate(), {"vm"}, {}, &bad_output)) == kExitUsage);
  Settings bad_timeout = *Settings::Load({{"timeout", "soon"}}, [](const std::string&) { return std::nullopt; }, {});
  CHECK(RunRpc(Of(Migrate(), {"vm"}, {}, &bad_timeout)) == kExitUsage);
}

}  // namespace
}  // namespace ppn::ppnctl
