#include "tools/ppnctl/completion.h"

#include <cstdio>
#include <fstream>

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

int Nothing(const Invocation&) { return 0; }

const std::vector<Verb>& Table() {
  static const auto* table = new std::vector<Verb>{
      Verb({"vm", "create"}).Args({"NAME"}).Calls("tenant", "create-vm"),
      Verb({"vm", "list"}).Calls("tenant", "list-vms"),
      Verb({"migrate"}).Args({"VM"}).Calls("scheduler", "migrate").Alias("to", "target_node_id"),
      Verb({"ledger", "verify"}).Runs(Nothing),
  };
  return *table;
}

// What bash completes for `line` (the word being completed last), with the script sourced.
std::string Complete(const std::string& script, const std::string& line) {
  std::string path = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/completion.sh";
  std::ofstream(path) << script;
  std::string cmd = "bash -c 'source " + path + "; COMP_WORDS=(" + line +
                    "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _ppnctl 2>/dev/null; echo \"${COMPREPLY[*]}\"'";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  pclose(p);
  return out;
}

TEST_CASE("completion offers verbs services and the words of each", "[ppnctl][completion]") {
  std::string script = BashCompletion(Table(), Api::Get());
  CHECK(script.find("complete -F _ppnctl ppnctl\n") != std::string::npos);
  CHECK(Complete(script, "ppnctl v") == "vm\n");
  CHECK(Complete(script, "ppnctl m") == "migrate\n");
  CHECK(Complete(script, "ppnctl vm \"\"") == "create list\n");
  CHECK(Complete(script, "ppnctl ledger \"\"").find("verify append append-batch") == 0);
  CHECK(Complete(script, "ppnctl scheduler \"\"") == "migrate drain rebalance pin unpin\n");
}

TEST_CASE("completion offers each verb's and rpc's own flags and the settings", "[ppnctl][completion]") {
  std::string script = BashCompletion(Table(), Api::Get());
  CHECK(Complete(script, "ppnctl vm create web --spec.mem") == "--spec.memory_mib=\n");
  CHECK(Complete(script, "ppnctl migrate vm-1 --t") == "--target_node_id= --to= --token_file= --timeout=\n");
  CHECK(Complete(script, "ppnctl fleet list-vms --inc") == "--include_stopped=\n");
  CHECK(Complete(script, "ppnctl ledger verify --ledger") == "--ledger_key=\n");
  CHECK(Complete(script, "ppnctl ledger verify --h") == "--help\n");
}

}  // namespace
}  // namespace ppn::ppnctl
