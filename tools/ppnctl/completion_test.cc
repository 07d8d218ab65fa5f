#include "tools/ppnctl/completion.h"

#include <cstdio>
#include <fstream>

#include <sys/stat.h>

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
      Verb({"vm", "get"}).Args({"NAME"}).Calls("tenant", "get-vm").ArgFields({"name"}),
      Verb({"node", "drain"}).Args({"NODE"}).Calls("scheduler", "drain").ArgFields({"node_id"}),
      Verb({"__complete"}).Args({"KIND"}).Runs(Nothing),
  };
  return *table;
}

// What bash completes for `line` (the word being completed last), with the script sourced and
// a fake `ppnctl` on the PATH answering __complete as a live mesh would; with `nospace`, also
// whether the completion asked bash for no trailing space.
std::string Complete(const std::string& script, const std::string& line, bool* nospace = nullptr) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp");
  std::ofstream(dir + "/ppnctl") << "#!/bin/sh\n"
                                    "case \"$1 $2\" in\n"
                                    "  '__complete vms') printf 'vms/web\\nvms/db\\n' ;;\n"
                                    "  '__complete nodes') printf 'laptop-a\\nlaptop-b\\n' ;;\n"
                                    "esac\n";
  chmod((dir + "/ppnctl").c_str(), 0755);
  std::string path = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/completion.sh";
  std::ofstream(path) << script;
  // compopt works only inside a real completion: a stub records what it was asked.
  std::string cmd = "PATH=" + dir + ":$PATH bash -c 'compopt() { echo \"$*\" > " + dir + "/compopt; }; rm -f " + dir +
                    "/compopt; source " + path + "; COMP_WORDS=(" + line +
                    "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _ppnctl 2>/dev/null; echo \"${COMPREPLY[*]}\"'";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  pclose(p);
  if (nospace != nullptr) *nospace = std::ifstream(dir + "/compopt").good();
  return out;
}

TEST_CASE("completion offers verbs services and the words of each", "[ppnctl][completion]") {
  std::string script = BashCompletion(Table(), Api::Get());
  CHECK(script.find("complete -F _ppnctl ppnctl\n") != std::string::npos);
  CHECK(Complete(script, "ppnctl v") == "vm\n");
  CHECK(Complete(script, "ppnctl m") == "migrate\n");
  CHECK(Complete(script, "ppnctl vm \"\"") == "create list get\n");
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

TEST_CASE("every rpc of a service completes its own flags, not only the first", "[ppnctl][completion]") {
  std::string script = BashCompletion(Table(), Api::Get());
  CHECK(Complete(script, "ppnctl scheduler migrate --vm") == "--vm_id=\n");
  CHECK(Complete(script, "ppnctl scheduler drain --n") == "--node_id=\n");
  CHECK(Complete(script, "ppnctl scheduler unpin --v") == "--vm_id= --verbose\n");
  CHECK(Complete(script, "ppnctl tenant destroy-vm --n") == "--name=\n");
}

TEST_CASE("a flag wanting a value gets no trailing space and a whole word does", "[ppnctl][completion]") {
  std::string script = BashCompletion(Table(), Api::Get());
  bool nospace = false;
  CHECK(Complete(script, "ppnctl vm create web --spec.mem", &nospace) == "--spec.memory_mib=\n");
  CHECK(nospace);
  CHECK(Complete(script, "ppnctl vm create web --hel", &nospace) == "--help\n");
  CHECK_FALSE(nospace);
  CHECK(Complete(script, "ppnctl vm cr", &nospace) == "create\n");
  CHECK_FALSE(nospace);
}

TEST_CASE("flags and their values before the verb do not shift the words", "[ppnctl][completion]") {
  std::string script = BashCompletion(Table(), Api::Get());
  CHECK(Complete(script, "ppnctl --output = json vm cr") == "create\n");
  CHECK(Complete(script, "ppnctl -o json vm create web --spec.mem") == "--spec.memory_mib=\n");
  CHECK(Complete(script, "ppnctl vm list -o j") == "json\n");
  CHECK(Complete(script, "ppnctl vm list --output = \"\"") == "table wide json yaml\n");
}

TEST_CASE("vm and node arguments complete live names and hidden verbs never show", "[ppnctl][completion]") {
  std::string script = BashCompletion(Table(), Api::Get());
  CHECK(Complete(script, "ppnctl vm get vms/w") == "vms/web\n");
  CHECK(Complete(script, "ppnctl migrate \"\"") == "vms/web vms/db\n");
  CHECK(Complete(script, "ppnctl node drain l") == "laptop-a laptop-b\n");
  CHECK(Complete(script, "ppnctl vm create \"\"") == "\n");  // a new name: nothing to look up
  CHECK(Complete(script, "ppnctl _") == "\n");
  CHECK(script.find("__complete ") != std::string::npos);
}

TEST_CASE("zsh completion is the bash one through bashcompinit", "[ppnctl][completion]") {
  std::string zsh = ZshCompletion(Table(), Api::Get());
  CHECK(zsh.rfind("#compdef ppnctl\n", 0) == 0);
  CHECK(zsh.find("bashcompinit && bashcompinit\n") != std::string::npos);
  CHECK(zsh.find(BashCompletion(Table(), Api::Get())) != std::string::npos);
}

}  // namespace
}  // namespace ppn::ppnctl
