#include "tools/ppnctl/verb.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

int Nothing(const Invocation&) { return 0; }

// A small table over the real API, so resolution is tested apart from the real table.
const std::vector<Verb>& Table() {
  static const auto* table = new std::vector<Verb>{
      Verb({"vm", "create"}).Args({"NAME"}).Calls("tenant", "create-vm").ArgFields({"spec.display_name"}),
      Verb({"vm", "list"}).Calls("tenant", "list-vms"),
      Verb({"ledger", "verify"}).Runs(Nothing),
      Verb({"migrate"}).Args({"VM"}).Flags("[--to NODE]").Calls("scheduler", "migrate").Alias("to", "target_node_id"),
      Verb({"help"}).Args({"VERB..."}).Runs(Nothing),
  };
  return *table;
}

absl::StatusOr<Resolved> Find(const std::vector<std::string>& words) { return Resolve(Table(), Api::Get(), words); }

TEST_CASE("words find the longest verb and the rest are its arguments", "[ppnctl][verb]") {
  auto create = Find({"vm", "create", "web"});
  REQUIRE(create.ok());
  CHECK(create->verb == &Table()[0]);
  CHECK(create->command->method->full_name() == "ppn.tenancy.v1.TenantService.CreateVm");
  CHECK(create->args == std::vector<std::string>{"web"});
  auto migrate = Find({"migrate", "vm-1"});
  REQUIRE(migrate.ok());
  CHECK(migrate->verb->words == std::vector<std::string>{"migrate"});
  auto verify = Find({"ledger", "verify"});
  REQUIRE(verify.ok());
  CHECK(verify->command == nullptr);
  CHECK(verify->verb->run == &Nothing);
}

TEST_CASE("words that name no verb are SERVICE RPC of the generated layer", "[ppnctl][verb]") {
  auto rpc = Find({"fleet", "GetVm"});
  REQUIRE(rpc.ok());
  CHECK(rpc->verb == nullptr);
  CHECK(rpc->command->rpc_command == "get-vm");
  auto ledger = Find({"ledger", "get-entries"});
  REQUIRE(ledger.ok());
  CHECK(ledger->command->rpc_command == "get-entries");
}

TEST_CASE("a group or a service alone names the group", "[ppnctl][verb]") {
  for (const char* word : {"vm", "ledger", "fleet"}) {
    auto r = Find({word});
    REQUIRE(r.ok());
    CHECK(r->group == word);
    CHECK(CheckArguments(*r).message() ==
          std::string(word) + " needs a verb or an rpc: ppnctl " + word + " --help lists them");
  }
}

TEST_CASE("unknown verbs rpcs and services are refused with the nearest known one", "[ppnctl][verb]") {
  auto verb = Find({"vm", "craete", "web"});
  CHECK(verb.status().code() == absl::StatusCode::kNotFound);
  CHECK(verb.status().message() == "unknown verb \"vm craete\" (did you mean \"vm create\"?); vm verbs: create, list");
  auto ledger = Find({"ledger", "verfy"});
  CHECK(ledger.status().message().find("unknown rpc \"verfy\" of ledger (did you mean \"verify\"?); rpcs: append, ") ==
        0);
  CHECK(ledger.status().message().find("; verbs: verify") != std::string::npos);
  auto rpc = Find({"fleet", "get-vn"});
  CHECK(rpc.status().message().find("unknown rpc \"get-vn\" of fleet (did you mean \"get-vm\"?); rpcs: ") == 0);
  auto first = Find({"vmm", "list"});
  CHECK(first.status().message().find("unknown verb \"vmm\" (did you mean \"vm\"?); verbs: vm, ledger, migrate, help; "
                                      "services: ") == 0);
}

TEST_CASE("too few or too many arguments are refused with the usage", "[ppnctl][verb]") {
  CHECK(CheckArguments(*Find({"vm", "create"})).message() == "missing NAME; usage: ppnctl vm create NAME");
  CHECK(CheckArguments(*Find({"vm", "create", "a", "b"})).message() ==
        "unexpected argument \"b\"; usage: ppnctl vm create NAME");
  CHECK(CheckArguments(*Find({"vm", "list", "all"})).code() == absl::StatusCode::kInvalidArgument);
  CHECK(CheckArguments(*Find({"fleet", "list-vms", "x"})).message() ==
        "unexpected argument \"x\": ppnctl fleet list-vms takes flags only (--field=value)");
  CHECK(CheckArguments(*Find({"vm", "create", "a"})).ok());
  CHECK(CheckArguments(*Find({"help"})).ok());
  CHECK(CheckArguments(*Find({"help", "vm", "create"})).ok());
  CHECK(Usage(Table()[4]) == "help [VERB...]");
}

TEST_CASE("a verb accepts its request's fields its aliases and json", "[ppnctl][verb]") {
  auto migrate = Find({"migrate", "x"});
  std::vector<std::string> flags = AcceptedFlags(migrate->verb, *migrate->command);
  for (const char* f : {"vm_id", "target_node_id", "to", "json"}) {
    CHECK(std::find(flags.begin(), flags.end(), f) != flags.end());
  }
  auto create = Find({"vm", "create", "x"});
  flags = AcceptedFlags(create->verb, *create->command);
  CHECK(std::find(flags.begin(), flags.end(), "spec.memory_mib") != flags.end());
  CHECK(std::find(flags.begin(), flags.end(), "spec.ttl") != flags.end());
  CHECK(std::find(flags.begin(), flags.end(), "spec.ttl.seconds") == flags.end());
}

}  // namespace
}  // namespace ppn::ppnctl
