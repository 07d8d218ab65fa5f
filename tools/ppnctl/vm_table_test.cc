#include "tools/ppnctl/vm_table.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

constexpr int64_t kNow = 1795000000;

ppn::tenancy::v1::ListVmsResponse Vms() {
  ppn::tenancy::v1::ListVmsResponse r;
  ppn::tenancy::v1::Vm* web = r.add_vms();
  web->set_name("vms/web");
  web->set_vm_id("vm-0190a1b2c3d4e5f6a7b");
  web->set_state(ppn::types::v1::VM_STATE_RUNNING);
  web->mutable_create_time()->set_seconds(kNow - 300);
  web->mutable_expire_time()->set_seconds(kNow + 3 * 3600);
  web->mutable_spec()->set_vcpus(1);
  web->mutable_spec()->set_memory_mib(128);
  web->mutable_spec()->set_image("ppn-test-guest");
  web->mutable_spec()->set_display_name("web");
  (*web->mutable_spec()->mutable_labels())["team"] = "web";
  (*web->mutable_spec()->mutable_labels())["env"] = "ci";
  ppn::types::v1::ForwardedPort* http = web->add_forwarded_ports();
  http->set_guest_port(80);
  http->set_protocol(ppn::types::v1::PROTOCOL_TCP);
  http->set_host_address("127.0.0.1");
  http->set_host_port(20300);
  ppn::types::v1::ForwardedPort* dns = web->add_forwarded_ports();
  dns->set_guest_port(53);
  dns->set_protocol(ppn::types::v1::PROTOCOL_UDP);
  dns->set_host_address("10.8.0.2");
  dns->set_host_port(20301);
  dns->set_public_address("203.0.113.5");
  dns->set_public_port(30001);
  ppn::tenancy::v1::Vm* db = r.add_vms();
  db->set_name("vms/4f2a9c");
  db->set_state(ppn::types::v1::VM_STATE_PENDING);
  db->set_state_message("placing");
  db->mutable_create_time()->set_seconds(kNow - 7);
  return r;
}

TEST_CASE("vm list prints name state age and address with the enum prefix dropped", "[ppnctl][vm_table]") {
  CHECK(RenderVms(Vms(), absl::FromUnixSeconds(kNow), false) ==
        "NAME        STATE    AGE  ADDRESS\n"
        "vms/web     RUNNING  5m   127.0.0.1:20300→80/tcp, 203.0.113.5:30001→53/udp\n"
        "vms/4f2a9c  PENDING  7s   -\n");
}

TEST_CASE("vm list -o wide adds size image display name expiry message id and labels", "[ppnctl][vm_table]") {
  CHECK(
      RenderVms(Vms(), absl::FromUnixSeconds(kNow), true) ==
      "NAME        STATE    AGE  ADDRESS                                           VCPUS  MEMORY_MIB  IMAGE           "
      "DISPLAY_NAME  EXPIRES  MESSAGE  VM_ID                   LABELS\n"
      "vms/web     RUNNING  5m   127.0.0.1:20300→80/tcp, 203.0.113.5:30001→53/udp  1      128         ppn-test-guest  "
      "web           in 3h    -        vm-0190a1b2c3d4e5f6a7b  env=ci,team=web\n"
      "vms/4f2a9c  PENDING  7s   -                                                 0      0           -               "
      "-             -        placing  -                       -\n");
}

TEST_CASE("vm get prints its one VM as a one-row table", "[ppnctl][vm_table]") {
  ppn::tenancy::v1::ListVmsResponse one;
  *one.add_vms() = Vms().vms(1);
  CHECK(RenderVms(one, absl::FromUnixSeconds(kNow), false) ==
        "NAME        STATE    AGE  ADDRESS\n"
        "vms/4f2a9c  PENDING  7s   -\n");
}

TEST_CASE("an empty page token prints nothing and a real one says how to go on", "[ppnctl][vm_table]") {
  ppn::tenancy::v1::ListVmsResponse none;
  CHECK(RenderVms(none, absl::FromUnixSeconds(kNow), false) == "NAME  STATE  AGE  ADDRESS\n");
  none.set_next_page_token("abc");
  CHECK(RenderVms(none, absl::FromUnixSeconds(kNow), false) == "NAME  STATE  AGE  ADDRESS\nmore: --page_token=abc\n");
}

TEST_CASE("the operator's list shows each VM's tenant and node", "[ppnctl][vm_table]") {
  ppn::fleet::v1::ListVmsResponse r;
  ppn::fleet::v1::VmRecord* vm = r.add_vms();
  vm->set_vm_id("web");
  vm->set_tenant_id("acme");
  vm->set_node_id("laptop-a");
  vm->set_state(ppn::types::v1::VM_STATE_MIGRATING);
  vm->mutable_create_time()->set_seconds(kNow - 3 * 86400);
  *vm->add_forwarded_ports() = Vms().vms(0).forwarded_ports(0);
  CHECK(RenderFleetVms(r, absl::FromUnixSeconds(kNow), false) ==
        "NAME  TENANT  STATE      AGE  ADDRESS                 NODE\n"
        "web   acme    MIGRATING  3d   127.0.0.1:20300→80/tcp  laptop-a\n");
}

// Two tenants' VMs of one name, one unnamed: the operator tells them apart by TENANT (and
// VM_ID with -o wide), and NAME is what `vm destroy --tenant T NAME` takes.
ppn::fleet::v1::ListVmsResponse AcrossTenants() {
  ppn::fleet::v1::ListVmsResponse r;
  for (const char* tenant : {"acme", "globex"}) {
    ppn::fleet::v1::VmRecord* vm = r.add_vms();
    vm->set_vm_id(std::string(tenant) == "acme" ? "vm-0190a1b2c3d4e5f6a7b" : "vm-0190a1b2c3d4e5f6a7c");
    vm->set_name("web");
    vm->set_tenant_id(tenant);
    vm->set_node_id(std::string(tenant) == "acme" ? "laptop-a" : "cloud");
    vm->set_state(std::string(tenant) == "acme" ? ppn::types::v1::VM_STATE_RUNNING : ppn::types::v1::VM_STATE_UNKNOWN);
    vm->set_state_message(std::string(tenant) == "acme" ? "" : "node cloud is unreachable");
    vm->mutable_create_time()->set_seconds(kNow - 90);
    vm->mutable_spec()->set_vcpus(1);
    vm->mutable_spec()->set_memory_mib(128);
    vm->mutable_spec()->set_image("ppn-test-guest");
  }
  ppn::fleet::v1::VmRecord* unnamed = r.add_vms();
  unnamed->set_vm_id("vm-0190a1b2c3d4e5f6a7d");
  unnamed->set_tenant_id("initech");
  unnamed->set_state(ppn::types::v1::VM_STATE_PENDING);
  return r;
}

TEST_CASE("the operator's list across tenants names each VM by its tenant's name with TENANT and NODE",
          "[ppnctl][vm_table][names]") {
  CHECK(RenderFleetVms(AcrossTenants(), absl::FromUnixSeconds(kNow), false) ==
        "NAME                    TENANT   STATE    AGE  ADDRESS  NODE\n"
        "web                     acme     RUNNING  90s  -        laptop-a\n"
        "web                     globex   UNKNOWN  90s  -        cloud\n"
        "vm-0190a1b2c3d4e5f6a7d  initech  PENDING  -    -        -\n");
}

TEST_CASE("the operator's wide list adds size image pin message and the VM_ID", "[ppnctl][vm_table][names]") {
  CHECK(RenderFleetVms(AcrossTenants(), absl::FromUnixSeconds(kNow), true) ==
        "NAME                    TENANT   STATE    AGE  ADDRESS  NODE      VCPUS  MEMORY_MIB  IMAGE           PINNED  "
        "MESSAGE                    VM_ID\n"
        "web                     acme     RUNNING  90s  -        laptop-a  1      128         ppn-test-guest  -       "
        "-                          vm-0190a1b2c3d4e5f6a7b\n"
        "web                     globex   UNKNOWN  90s  -        cloud     1      128         ppn-test-guest  -       "
        "node cloud is unreachable  vm-0190a1b2c3d4e5f6a7c\n"
        "vm-0190a1b2c3d4e5f6a7d  initech  PENDING  -    -        -         0      0           -               -       "
        "-                          vm-0190a1b2c3d4e5f6a7d\n");
}

TEST_CASE("vm get says what memory the guest has now, its balloon target and its maximum", "[ppnctl][vm_table]") {
  ppn::tenancy::v1::Vm vm = Vms().vms(0);
  CHECK(DescribeMemory(vm) == "memory: 128 MiB\n");
  vm.mutable_memory()->set_actual_mib(96);
  vm.mutable_memory()->set_balloon_target_mib(96);
  vm.mutable_memory()->set_max_mib(128);
  CHECK(DescribeMemory(vm) == "memory: 96 MiB now, balloon target 96 MiB, maximum 128 MiB\n");
  vm.mutable_memory()->set_balloon_target_mib(0);
  vm.mutable_memory()->set_actual_mib(128);
  CHECK(DescribeMemory(vm) == "memory: 128 MiB now, balloon target none, maximum 128 MiB\n");
}

}  // namespace
}  // namespace ppn::ppnctl
