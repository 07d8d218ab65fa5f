#include "tools/ppnctl/tenant_table.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

TEST_CASE("tenant list shows usage against each limit, the rate and the token ids", "[ppnctl][golden]") {
  ppn::tenancy::v1::ListTenantsResponse r;
  auto* acme = r.add_tenants();
  acme->set_tenant_id("acme");
  acme->mutable_limits()->set_max_vms(5);
  acme->mutable_limits()->set_max_vcpus(16);
  acme->mutable_limits()->set_max_memory_mib(8192);
  acme->mutable_limits()->set_requests_per_second(10);
  acme->mutable_limits()->set_burst(20);
  acme->mutable_usage()->set_vms(2);
  acme->mutable_usage()->set_vcpus(3);
  acme->mutable_usage()->set_memory_mib(768);
  acme->add_token_ids("3f2a1b9c");
  acme->add_revoked_token_ids("00aa11bb");
  auto* globex = r.add_tenants();
  globex->set_tenant_id("globex");
  globex->mutable_limits()->set_max_vms(1);
  globex->mutable_limits()->set_max_disk_gib(20);
  globex->mutable_usage();
  CHECK(RenderTenants(r) ==
        "NAME    VMS  VCPUS  MEMORY_MIB  DISK_GIB  RATE           TOKENS\n"
        "acme    2/5  3/16   768/8192    0/-       10/s burst 20  3f2a1b9c (1 revoked)\n"
        "globex  0/1  0/0    0/0         0/20      -              -\n");
  acme->clear_usage();
  r.set_usage_error("usage unknown: the fleet is unreachable");
  CHECK(RenderTenants(r).find("acme    ?/5  ?/16") != std::string::npos);
  CHECK(RenderTenants(r).find("\nusage unknown: the fleet is unreachable\n") != std::string::npos);
}

TEST_CASE("a new token is printed once on a line of its own", "[ppnctl][golden]") {
  CHECK(RenderNewToken("acme", "ppn_abc", "3f2a1b9c") ==
        "token 3f2a1b9c for tenant acme (shown once: the proxy keeps only its hash; store it now):\nppn_abc\n");
}

}  // namespace
}  // namespace ppn::ppnctl
