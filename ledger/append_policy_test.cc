#include "ledger/append_policy.h"

#include "catch2/catch.hpp"

namespace ppn::ledger {
namespace {

TEST_CASE("each entry kind has exactly one writer role", "[ledger][append_policy]") {
  AppendPolicy p = AppendPolicy::Default();
  CHECK(p.Check("scheduler", "vm.migrate").ok());
  CHECK(p.Check("fleet", "vm.migrate").message() == "role fleet may not append entries of kind vm.migrate");
  CHECK(p.Check("scheduler", "vm.pin").ok());
  CHECK(!p.Check("fleet", "vm.pin").ok());
  CHECK(p.Check("scheduler", "scheduler.drain").ok());
  CHECK(p.Check("fleet", "vm.create").ok());
  CHECK(p.Check("fleet", "vm.expire").ok());
  CHECK(!p.Check("scheduler", "vm.create").ok());
  CHECK(p.Check("tenant-proxy", "tenant.vm.create").ok());
  CHECK(p.Check("tenant-proxy", "tenant.rate_limited").ok());
  CHECK(!p.Check("tenant-proxy", "vm.create").ok());
  CHECK(!p.Check("fleet", "tenant.vm.create").ok());
  CHECK(p.Check("pairing-admin", "node.join").ok());
  CHECK(!p.Check("fleet", "node.join").ok());
  CHECK(p.Check("pairing-admin", "node.revoke").ok());
  CHECK(!p.Check("operator", "node.revoke").ok());  // operators revoke through the pairing admin
  CHECK(!p.Check("fleet", "node.revoke").ok());
  CHECK(p.Check("fleet", "node.cordon").ok());
  CHECK(p.Check("fleet", "node.uncordon").ok());
  CHECK(!p.Check("pairing-admin", "node.cordon").ok());
  CHECK(!p.Check("operator", "node.cordon").ok());
  CHECK(!p.Check("scheduler", "node.uncordon").ok());
  CHECK(p.Check("operator", "capability.revoke").ok());
  CHECK(!p.Check("host", "vm.create").ok());
  CHECK(!p.Check("operator", "unknown.kind").ok());
}

TEST_CASE("an exact kind outranks a prefix and a longer prefix a shorter one", "[ledger][append_policy]") {
  AppendPolicy p({{"a.*", {"one"}}, {"a.b.*", {"two"}}, {"a.b.c", {"three"}}});
  CHECK(p.Check("one", "a.x").ok());
  CHECK(p.Check("two", "a.b.x").ok());
  CHECK(!p.Check("one", "a.b.x").ok());
  CHECK(p.Check("three", "a.b.c").ok());
  CHECK(!p.Check("two", "a.b.c").ok());
}

}  // namespace
}  // namespace ppn::ledger
