#include "tools/ppnctl/help.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

int Nothing(const Invocation&) { return 0; }

const std::vector<Verb>& Table() {
  static const auto* table = new std::vector<Verb>{
      Verb({"vm", "create"})
          .Args({"NAME"})
          .Flags("[--spec.image=I]")
          .Help("creates a VM")
          .Calls("tenant", "create-vm")
          .ArgFields({"spec.display_name"})
          .Defaults({{"spec.vcpus", "1"}}),
      Verb({"migrate"})
          .Args({"VM"})
          .Help("moves a VM")
          .Calls("scheduler", "migrate")
          .ArgFields({"vm_id"})
          .Alias("to", "target_node_id"),
      Verb({"ledger", "verify"}).Help("checks the ledger").Details("At length.").Runs(Nothing),
  };
  return *table;
}

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST_CASE("the main help lists every verb every rpc and every setting", "[ppnctl][help]") {
  std::string help = MainHelp(Table(), Api::Get());
  INFO(help);
  CHECK(Has(help, "  vm create NAME [--spec.image=I]  creates a VM\n"));
  CHECK(Has(help, "  migrate VM                       moves a VM\n"));
  CHECK(Has(help, "  scheduler: migrate drain rebalance pin unpin\n"));
  for (const SettingSpec& s : SettingSpecs()) CHECK(Has(help, "--" + s.name + (s.value.empty() ? "" : "=" + s.value)));
  CHECK(Has(help, "(default state/pki/ca.pem)"));
  CHECK(Has(help, "-h or --help anywhere prints help and runs nothing."));
}

TEST_CASE("a verb's help says what it calls and how its words become fields", "[ppnctl][help]") {
  Resolved create{&Table()[0], *Api::Get().Find("tenant", "create-vm"), "", {}};
  std::string help = HelpFor(create, Table(), Api::Get());
  INFO(help);
  CHECK(help.find("ppnctl vm create NAME [--spec.image=I]\n\ncreates a VM\n\nCalls tenant create-vm: ") == 0);
  CHECK(Has(help, "  NAME sets --spec.display_name\n"));
  CHECK(Has(help, "  unless given: --spec.vcpus=1\n"));
  CHECK(Has(help, "Request fields (ppn.tenancy.v1.CreateVmRequest):\n"));
  CHECK(Has(help, "  --spec.memory_mib (uint32)"));
  Resolved migrate{&Table()[1], *Api::Get().Find("scheduler", "migrate"), "", {}};
  CHECK(Has(HelpFor(migrate, Table(), Api::Get()), "  --to sets --target_node_id\n"));
  Resolved verify{&Table()[2], nullptr, "", {}};
  CHECK(HelpFor(verify, Table(), Api::Get()) == "ppnctl ledger verify\n\nchecks the ledger\n\nAt length.\n");
}

TEST_CASE("a group's help lists its verbs and its service's rpcs", "[ppnctl][help]") {
  std::string ledger = HelpFor(Resolved{nullptr, nullptr, "ledger", {}}, Table(), Api::Get());
  INFO(ledger);
  CHECK(ledger.find("Verbs:\n  ledger verify  checks the ledger\n\nRPCs of ledger (ppnctl ledger RPC --help for its "
                    "fields):\n  append append-batch get-entries") == 0);
  CHECK(HelpFor(Resolved{nullptr, nullptr, "vm", {}}, Table(), Api::Get()) ==
        "Verbs:\n  vm create NAME [--spec.image=I]  creates a VM\n");
}

TEST_CASE("an rpc's help lists its request's fields with their proto comments", "[ppnctl][help]") {
  std::string help = RpcHelp(**Api::Get().Find("ledger", "get-consistency-proof"), Api::Get());
  CHECK(help ==
        "ppnctl ledger get-consistency-proof [--field=value ...]\n\n"
        "Proves that the tree of size `first_tree_size` is a prefix of the tree of size\n"
        "`second_tree_size`.\n\n"
        "Request fields (ppn.ledger.v1.GetConsistencyProofRequest):\n"
        "  --first_tree_size (uint64)  Size of the older tree, at least 1.\n"
        "  --second_tree_size (uint64)  Size of the newer tree; 0 means the current size.\n");
}

}  // namespace
}  // namespace ppn::ppnctl
