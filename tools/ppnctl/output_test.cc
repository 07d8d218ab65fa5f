#include "tools/ppnctl/output.h"

#include "catch2/catch.hpp"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"

namespace ppn::ppnctl {
namespace {

ppn::fleet::v1::ListVmsResponse FleetVms() {
  ppn::fleet::v1::ListVmsResponse r;
  ppn::fleet::v1::VmRecord* vm = r.add_vms();
  vm->set_vm_id("web");
  vm->set_tenant_id("acme");
  vm->set_node_id("laptop-a");
  vm->set_state(ppn::types::v1::VM_STATE_RUNNING);
  return r;
}

TEST_CASE("a list table drops enum prefixes and an empty page token", "[ppnctl][output]") {
  std::string table = Render(FleetVms(), Format::kTable);
  CHECK(table.find("RUNNING") != std::string::npos);
  CHECK(table.find("VM_STATE_") == std::string::npos);
  CHECK(table.find("next_page_token") == std::string::npos);
  ppn::fleet::v1::ListVmsResponse more = FleetVms();
  more.set_next_page_token("p2");
  CHECK(Render(more, Format::kTable).find("\nmore: --page_token=p2\n") != std::string::npos);
}

TEST_CASE("JSON and YAML keep every field and the enum's full name", "[ppnctl][output]") {
  std::string json = Render(FleetVms(), Format::kJson);
  CHECK(json.find("\"state\":\"VM_STATE_RUNNING\"") != std::string::npos);
  CHECK(json.find("\"next_page_token\":\"\"") != std::string::npos);
  std::string yaml = Render(FleetVms(), Format::kYaml);
  CHECK(yaml.find("state: \"VM_STATE_RUNNING\"") != std::string::npos);
  CHECK(yaml.find("next_page_token: \"\"") != std::string::npos);
}

TEST_CASE("the trace redacts every field named like a secret, at any depth", "[ppnctl][output]") {
  ppn::tenancy::v1::CreateVmRequest request;
  request.mutable_spec()->set_user_data("#cloud-config\npassword: hunter2");
  request.mutable_spec()->add_ssh_authorized_keys("ssh-ed25519 AAAA");
  request.mutable_spec()->set_image("ppn-test-guest");
  std::string trace = RedactedJson(request);
  CHECK(trace.find("hunter2") == std::string::npos);
  CHECK(trace.find("AAAA") == std::string::npos);
  CHECK(trace.find("\"user_data\":\"<redacted>\"") != std::string::npos);
  CHECK(trace.find("\"ssh_authorized_keys\":\"<redacted>\"") != std::string::npos);
  CHECK(trace.find("ppn-test-guest") != std::string::npos);
  CHECK(IsSecretField("next_page_token"));
  CHECK(IsSecretField("ledger_key"));
  CHECK_FALSE(IsSecretField("image"));
}

TEST_CASE("a guest's console bytes cannot drive the terminal", "[ppnctl][output]") {
  CHECK(ConsoleText("PPN-TICK 1\n\tok") == "PPN-TICK 1\n\tok");
  CHECK(ConsoleText("\x1b]0;pwned\x07\x1b[2J\r") == "\\x1b]0;pwned\\x07\\x1b[2J\\x0d");
  CHECK(ConsoleText(std::string("\xc2\x9b" "6n", 4)) == "\\xc2\\x9b6n");  // a C1 CSI in UTF-8
  CHECK(ConsoleText(std::string("a\0b", 3)) == "a\\x00b");
}

TEST_CASE("a mistyped output format is refused with the nearest one", "[ppnctl][output]") {
  CHECK(ParseFormat("yamll").status().message() == "-o must be table, wide, json or yaml (did you mean \"yaml\"?)");
  CHECK(*ParseFormat("wide") == Format::kWide);
}

}  // namespace
}  // namespace ppn::ppnctl
