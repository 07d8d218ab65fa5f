// FleetCore's names and lists: ids a tenant chooses (a per-tenant name beside the generated
// vm_id, which nodes, ports and the ledger keep using), every call by name or id, ListVms
// filters and the page tokens that continue only the list that issued them.

#include "absl/strings/strip.h"
#include "catch2/catch.hpp"
#include "common/vm_spec.h"
#include "fleet/fleet_core.h"
#include "fleet/testing/core_fixture.h"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::ListVmsRequest;
using ppn::fleet::v1::VmRecord;
using testing::Beat;
using testing::CoreFixture;
using testing::Spec;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// The names (or ids when none was chosen) of what the scope lists, in order.
std::vector<std::string> Names(CoreFixture& f, const Scope& scope, const std::string& filter) {
  ListVmsRequest r;
  r.set_filter(filter);
  auto list = f.core->ListVms(scope, r);
  REQUIRE(list.ok());
  std::vector<std::string> out;
  for (const auto& vm : list->vms()) out.push_back(vm.name().empty() ? vm.vm_id() : vm.name());
  return out;
}

TEST_CASE("a tenant-chosen id names the VM within its tenant while its vm_id stays generated", "[fleet][names]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  ppn::types::v1::VmSpec spec = Spec("web");
  spec.clear_display_name();
  auto acme = f.core->CreateVm("acme", spec, "", "web");
  REQUIRE(acme.ok());
  const VmRecord& web = acme->vm;
  CHECK(web.name() == "web");
  CHECK(IsGeneratedVmId(web.vm_id()));
  CHECK(web.spec().display_name() == "web");  // defaults to the chosen id
  // The node knows the VM by its generated id only.
  CHECK(f.agents.vms()["a"] == std::set<std::string>{web.vm_id()});

  SECTION("get, destroy and network changes take the name or the id") {
    CHECK(f.core->GetVm(Scope{"acme"}, "web")->vm_id() == web.vm_id());
    CHECK(f.core->GetVm(Scope{"acme"}, web.vm_id())->name() == "web");
    auto d = f.core->DestroyVm(Scope{"acme"}, "web", Actor::Tenant());
    REQUIRE(d.ok());
    CHECK(d->vm_id() == web.vm_id());
    CHECK(f.agents.vms()["a"].empty());
    CHECK(f.Ledger({"who", "name"}).back() == "vm.destroy " + web.vm_id() + " who=tenant name=web");
  }

  SECTION("the name is in the durable record: a restarted fleet resolves it") {
    f.Open();
    CHECK(f.core->GetVm(Scope{"acme"}, "web")->vm_id() == web.vm_id());
    CHECK(f.core->GetVm(Scope{"globex"}, "web").status().code() == absl::StatusCode::kNotFound);
  }

  SECTION("the name is unique among the tenant's VMs that exist, and free again once destroyed") {
    auto again = f.core->CreateVm("acme", Spec("other"), "", "web");
    CHECK(again.status().code() == absl::StatusCode::kAlreadyExists);
    CHECK(Message(again.status()) == "vm web already exists");
    CHECK(f.agents.calls().size() == 1);  // refused before any node was asked
    REQUIRE(f.core->DestroyVm(Scope{"acme"}, "web", Actor::Tenant()).ok());
    auto second = f.core->CreateVm("acme", Spec("web2"), "", "web");
    REQUIRE(second.ok());
    CHECK(second->vm.vm_id() != web.vm_id());
    CHECK(f.core->GetVm(Scope{"acme"}, "web")->vm_id() == second->vm.vm_id());  // the one that exists
    CHECK(f.core->GetVm(Scope{"acme"}, web.vm_id())->vm_id() == web.vm_id());   // the old one by its id
  }

  SECTION("another tenant may use the same name, and neither can reach or probe the other's") {
    auto globex = f.core->CreateVm("globex", Spec("web"), "", "web");
    REQUIRE(globex.ok());
    CHECK(globex->vm.vm_id() != web.vm_id());
    CHECK(f.core->GetVm(Scope{"globex"}, "web")->vm_id() == globex->vm.vm_id());
    CHECK(f.core->GetVm(Scope{"acme"}, "web")->vm_id() == web.vm_id());
    REQUIRE(f.core->CreateVm("acme", Spec("db"), "", "db").ok());
    // acme's "db" and a name nobody uses read alike to globex.
    CHECK(Message(f.core->GetVm(Scope{"globex"}, "db").status()) == "vm db not found");
    CHECK(Message(f.core->GetVm(Scope{"globex"}, "nothing").status()) == "vm nothing not found");
    CHECK(Message(f.core->DestroyVm(Scope{"globex"}, "db", Actor::Tenant()).status()) == "vm db not found");
    CHECK(f.core->UpdateVmNetwork(Scope{"globex"}, "db", {}, Actor::Tenant()).status().code() ==
          absl::StatusCode::kNotFound);
    REQUIRE(f.core->DestroyVm(Scope{"globex"}, "web", Actor::Tenant()).ok());
    CHECK(f.core->GetVm(Scope{"acme"}, "web")->state() == ppn::types::v1::VM_STATE_RUNNING);

    SECTION("the operator names the tenant when two tenants' VMs share a name") {
      REQUIRE(f.core->CreateVm("globex", Spec("web3"), "", "web").ok());
      auto ambiguous = f.core->GetVm(Scope{}, "web");
      CHECK(ambiguous.status().code() == absl::StatusCode::kFailedPrecondition);
      CHECK(Message(ambiguous.status()) ==
            "VMs of 2 tenants are named web; name the tenant (tenant_id, ppnctl --tenant)");
      CHECK(f.core->GetVm(Scope{"acme"}, "web")->vm_id() == web.vm_id());
      CHECK(f.core->GetVm(Scope{}, "db")->tenant_id() == "acme");  // one tenant's: no need
    }
  }

  SECTION("a chosen id is checked before anything is made") {
    for (const char* bad : {"Web", "2web", "web_1", "vm-0190a1b2c3d4e5f6a7b"}) {
      auto r = f.core->CreateVm("acme", Spec("x"), "", bad);
      CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    }
    CHECK(Message(f.core->CreateVm("acme", Spec("x"), "", std::string(64, 'a')).status()) ==
          "vm_id must be 1-63 characters of [a-z0-9-] starting with a letter");
    CHECK(f.agents.calls().size() == 1);
    CHECK(Names(f, Scope{"acme"}, "") == std::vector<std::string>{"web"});
  }

  SECTION("a retry with its request_id is replayed only for the same chosen id") {
    auto first = f.core->CreateVm("acme", Spec("api"), "req-1", "api");
    REQUIRE(first.ok());
    auto retry = f.core->CreateVm("acme", Spec("api"), "req-1", "api");
    REQUIRE(retry.ok());
    CHECK(retry->replayed);
    CHECK(retry->vm.vm_id() == first->vm.vm_id());
    auto other = f.core->CreateVm("acme", Spec("api"), "req-1", "api-2");
    CHECK(Message(other.status()) == "request_id req-1 was used for a different VM");
  }
}

TEST_CASE("ListVms filters by state name and labels and refuses what its subset does not hold", "[fleet][filter]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  ppn::types::v1::VmSpec ci = Spec("ci-1");
  (*ci.mutable_labels())["env"] = "ci";
  ppn::types::v1::VmSpec prod = Spec("prod-1");
  (*prod.mutable_labels())["env"] = "prod";
  REQUIRE(f.core->CreateVm("acme", ci, "", "ci-1").ok());
  REQUIRE(f.core->CreateVm("acme", prod, "", "prod-1").ok());
  REQUIRE(f.core->CreateVm("globex", ci, "", "ci-1").ok());

  CHECK(Names(f, Scope{"acme"}, "labels.env=ci") == std::vector<std::string>{"ci-1"});
  CHECK(Names(f, Scope{"acme"}, "state=RUNNING AND labels.env=prod") == std::vector<std::string>{"prod-1"});
  CHECK(Names(f, Scope{"acme"}, "state=FAILED").empty());
  CHECK(Names(f, Scope{"acme"}, "name=prod-1") == std::vector<std::string>{"prod-1"});
  CHECK(Names(f, Scope{}, "labels.env=ci").size() == 2);  // the operator: every tenant's

  SECTION("a VM whose node is unreachable matches its visible state") {
    f.clock.Advance(absl::Seconds(4));
    f.core->RunOnce();
    CHECK(Names(f, Scope{"acme"}, "state=RUNNING").empty());
    CHECK(Names(f, Scope{"acme"}, "state=UNKNOWN").size() == 2);
  }
  SECTION("destroyed VMs are not listed unless their state is asked for") {
    REQUIRE(f.core->DestroyVm(Scope{"acme"}, "ci-1", Actor::Tenant()).ok());
    CHECK(Names(f, Scope{"acme"}, "labels.env=ci").empty());
    VmRecord gone = *f.core->GetVm(Scope{"acme"}, "ci-1");
    std::string destroyed_state(absl::StripPrefix(ppn::types::v1::VmState_Name(gone.state()), "VM_STATE_"));
    CHECK(Names(f, Scope{"acme"}, "state=" + destroyed_state) == std::vector<std::string>{"ci-1"});
  }
  SECTION("a bad filter is INVALID_ARGUMENT saying where and what") {
    ListVmsRequest r;
    r.set_filter("state=RUNNING OR labels.env=ci");
    auto list = f.core->ListVms(Scope{"acme"}, r);
    CHECK(list.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(Message(list.status()) ==
          "filter: at position 15: expected \"AND\" (the only operator), found \"OR labels.env=ci\"");
  }
}

TEST_CASE("page tokens continue the caller's own list and a forged or foreign one is INVALID_ARGUMENT",
          "[fleet][paging]") {
  CoreFixture f;
  f.Nodes({Beat("a", 8000)});
  for (const char* name : {"one", "two", "three"}) {
    f.clock.Advance(absl::Milliseconds(1));  // ids are time-ordered
    REQUIRE(f.core->CreateVm("acme", Spec(name), "", name).ok());
  }
  REQUIRE(f.core->CreateVm("globex", Spec("four"), "", "four").ok());
  ListVmsRequest r;
  r.set_page_size(1);
  std::vector<std::string> seen;
  std::string first_token;
  do {
    auto page = f.core->ListVms(Scope{"acme"}, r);
    REQUIRE(page.ok());
    for (const auto& vm : page->vms()) seen.push_back(vm.name());
    if (first_token.empty()) first_token = page->next_page_token();
    r.set_page_token(page->next_page_token());
  } while (!r.page_token().empty());
  CHECK(seen == std::vector<std::string>{"one", "two", "three"});
  REQUIRE(!first_token.empty());
  // What a token carries is the fleet's business: it is no vm_id.
  CHECK(first_token.find("vm-") == std::string::npos);

  auto refused = [&](const Scope& scope, const ListVmsRequest& req) {
    auto list = f.core->ListVms(scope, req);
    return list.status().code() == absl::StatusCode::kInvalidArgument &&
           Message(list.status()).find("page_token is not valid for this list") == 0;
  };
  ListVmsRequest next;
  next.set_page_size(1);
  next.set_page_token(first_token);
  REQUIRE(f.core->ListVms(Scope{"acme"}, next).ok());
  CHECK(refused(Scope{"globex"}, next));  // another tenant's token
  ListVmsRequest other = next;
  other.set_filter("state=RUNNING");
  CHECK(refused(Scope{"acme"}, other));  // another list's
  other = next;
  other.set_page_token(f.core->GetVm(Scope{"acme"}, "one")->vm_id());  // a bare position, as tokens once were
  CHECK(refused(Scope{"acme"}, other));
  other = next;
  other.set_page_token(first_token.substr(1));  // garbled
  CHECK(refused(Scope{"acme"}, other));
  // A restarted fleet has another key: the token is refused, the list starts again.
  f.Open();
  CHECK(refused(Scope{"acme"}, next));
  CHECK(Names(f, Scope{"acme"}, "").size() == 3);
}

}  // namespace
}  // namespace ppn::fleet
