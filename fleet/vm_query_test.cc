#include "fleet/vm_query.h"

#include "catch2/catch.hpp"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::ListVmsRequest;
using ppn::fleet::v1::VmRecord;

std::string Error(const std::string& filter) { return std::string(ParseVmFilter(filter).status().message()); }

VmRecord Record(const std::string& id, const std::string& name, const std::string& env) {
  VmRecord r;
  r.set_vm_id(id);
  r.set_name(name);
  if (!env.empty()) (*r.mutable_spec()->mutable_labels())["env"] = env;
  return r;
}

TEST_CASE("a filter of state name and labels terms joined by AND matches what it says", "[fleet][vm_query]") {
  absl::StatusOr<VmFilter> f = ParseVmFilter("state=RUNNING AND labels.env=ci  AND  name=\"web\"");
  REQUIRE(f.ok());
  CHECK(f->state == ppn::types::v1::VM_STATE_RUNNING);
  CHECK(f->name == "web");
  CHECK(f->labels == std::map<std::string, std::string>{{"env", "ci"}});
  CHECK(f->Matches(Record("vm-1", "web", "ci"), ppn::types::v1::VM_STATE_RUNNING));
  CHECK(!f->Matches(Record("vm-1", "web", "ci"), ppn::types::v1::VM_STATE_UNKNOWN));
  CHECK(!f->Matches(Record("vm-1", "web", "prod"), ppn::types::v1::VM_STATE_RUNNING));
  CHECK(!f->Matches(Record("vm-1", "db", "ci"), ppn::types::v1::VM_STATE_RUNNING));

  SECTION("the prefixed state name the id and an empty filter") {
    CHECK(ParseVmFilter("state=VM_STATE_LOST")->state == ppn::types::v1::VM_STATE_LOST);
    absl::StatusOr<VmFilter> by_id = ParseVmFilter("name=vm-1");
    CHECK(by_id->Matches(Record("vm-1", "web", ""), ppn::types::v1::VM_STATE_RUNNING));
    absl::StatusOr<VmFilter> all = ParseVmFilter("  ");
    REQUIRE(all.ok());
    CHECK(all->Matches(Record("vm-2", "", ""), ppn::types::v1::VM_STATE_FAILED));
    CHECK(ParseVmFilter("labels.app.example.com/tier=web")->labels.count("app.example.com/tier") == 1);
  }
}

TEST_CASE("a filter outside the subset is refused with its position and what was expected", "[fleet][vm_query]") {
  CHECK(Error("state=RUNNING OR state=FAILED") ==
        "filter: at position 15: expected \"AND\" (the only operator), found \"OR state=FAILED\"");
  CHECK(Error("state=running") ==
        "filter: at position 7: expected a VM state (PENDING, STARTING, RUNNING, MIGRATING, STOPPING, STOPPED, FAILED, "
        "UNKNOWN, LOST, ...), found \"running\"");
  CHECK(Error("node=laptop-a") ==
        "filter: at position 1: expected a field (state, name or labels.KEY), found \"node=laptop-a\"");
  CHECK(Error("state = RUNNING") == "filter: at position 6: expected \"=\", found \" = RUNNING\"");
  CHECK(Error("state=RUNNING AND") ==
        "filter: at position 18: expected a field (state, name or labels.KEY), found the end");
  CHECK(Error("labels.env=\"ci") == "filter: at position 15: expected a closing '\"', found the end");
  CHECK(Error("name=a AND name=b") == "filter: at position 12: name is given twice (terms are ANDed: one each)");
  CHECK(Error("state=RUNNING\nAND x=1").find("filter: at position 14: expected \" AND \" or the end") == 0);
  CHECK(Error("labels.=x") ==
        "filter: at position 1: expected a field (state, name or labels.KEY), found \"labels.=x\"");
  CHECK(Error("name=") == "filter: at position 6: expected a value ([A-Za-z0-9_.-]+ or \"quoted\"), found the end");
  CHECK(ParseVmFilter(std::string(2000, 'a')).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("page tokens continue only the list that issued them", "[fleet][vm_query]") {
  PageTokens tokens(std::string(32, 'k'));
  ListVmsRequest r;
  r.set_filter("state=RUNNING");
  const std::string acme = PageTokens::Binding("acme", r);
  std::string token = tokens.Make(acme, "vm-0001");
  REQUIRE(tokens.Parse(acme, token).ok());
  CHECK(*tokens.Parse(acme, token) == "vm-0001");

  auto refused = [&](const std::string& binding, const std::string& t) {
    absl::StatusOr<std::string> p = tokens.Parse(binding, t);
    return p.status().code() == absl::StatusCode::kInvalidArgument &&
           p.status().message().find("page_token is not valid for this list") == 0;
  };
  SECTION("another tenant's token") { CHECK(refused(PageTokens::Binding("globex", r), token)); }
  SECTION("the operator's scope is another list") { CHECK(refused(PageTokens::Binding("", r), token)); }
  SECTION("another filter") {
    ListVmsRequest other = r;
    other.set_filter("state=FAILED");
    CHECK(refused(PageTokens::Binding("acme", other), token));
    other = r;
    (*other.mutable_label_selector())["env"] = "ci";
    CHECK(refused(PageTokens::Binding("acme", other), token));
    other = r;
    other.set_include_stopped(true);
    CHECK(refused(PageTokens::Binding("acme", other), token));
  }
  SECTION("a forged position, a garbled token and a bare vm id") {
    std::string forged = tokens.Make(acme, "vm-0002");
    forged = forged.substr(0, forged.find('.')) + token.substr(token.find('.'));
    CHECK(refused(acme, forged));
    std::string garbled = token;
    garbled.back() = garbled.back() == 'A' ? 'B' : 'A';
    CHECK(refused(acme, garbled));
    CHECK(refused(acme, "vm-0001"));
    CHECK(refused(acme, "!!!.???"));
    CHECK(refused(acme, std::string(300, 'a') + ".x"));
  }
  SECTION("another run of the fleet (another key)") {
    CHECK(refused(acme, PageTokens(std::string(32, 'j')).Make(acme, "vm-0001")));
  }
}

}  // namespace
}  // namespace ppn::fleet
