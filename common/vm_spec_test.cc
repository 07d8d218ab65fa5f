#include "common/vm_spec.h"

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"

namespace ppn {
namespace {

using ppn::types::v1::VmSpec;

VmSpec Good() {
  VmSpec s;
  s.set_display_name("web");
  s.set_vcpus(1);
  s.set_memory_mib(128);
  s.set_image("ppn-test-guest");
  s.add_port_forwards()->set_guest_port(80);
  (*s.mutable_labels())["env"] = "ci";
  return s;
}

std::string Message(const VmSpec& s) {
  absl::Status st = ValidateVmSpec(s);
  REQUIRE(st.code() == absl::StatusCode::kInvalidArgument);
  return std::string(st.message());
}

TEST_CASE("a well-formed spec is valid", "[common][vm_spec]") { CHECK(ValidateVmSpec(Good()).ok()); }

TEST_CASE("a TTL beyond protobuf's range or ten years is INVALID_ARGUMENT, never a CHECK", "[common][vm_spec]") {
  VmSpec s = Good();
  s.mutable_ttl()->set_seconds(int64_t{1} << 62);
  CHECK(Message(s) == "ttl must be positive and at most 3650 days");
  s.mutable_ttl()->set_seconds(3651LL * 86400);
  CHECK(Message(s) == "ttl must be positive and at most 3650 days");
  s.mutable_ttl()->set_seconds(10);
  s.mutable_ttl()->set_nanos(-5);
  CHECK(Message(s) == "ttl must be positive and at most 3650 days");
  s.mutable_ttl()->set_seconds(0);
  s.mutable_ttl()->set_nanos(0);
  CHECK(Message(s) == "ttl must be positive and at most 3650 days");
  s.mutable_ttl()->set_seconds(3600);
  CHECK(ValidateVmSpec(s).ok());
}

TEST_CASE("an undefined protocol enum value is refused", "[common][vm_spec]") {
  VmSpec s = Good();
  s.mutable_port_forwards(0)->set_protocol(static_cast<ppn::types::v1::Protocol>(99));
  CHECK(Message(s) == "port_forwards protocol 99 is not TCP or UDP");
  s.mutable_port_forwards(0)->set_protocol(ppn::types::v1::PROTOCOL_UNSPECIFIED);  // TCP
  CHECK(ValidateVmSpec(s).ok());
}

TEST_CASE("sizes out of range name their field", "[common][vm_spec]") {
  VmSpec s = Good();
  s.set_memory_mib(uint32_t{1} << 31);
  CHECK(Message(s) == "memory_mib must be 64-1048576");
  s.set_memory_mib(128);
  s.set_min_memory_mib(129);
  CHECK(Message(s) == "min_memory_mib must be at most memory_mib (128)");
  s.set_min_memory_mib(0);
  s.set_max_memory_mib(127);
  CHECK(Message(s) == "max_memory_mib must be memory_mib (128) plus a multiple of 2, at most 1048576");
  s.set_max_memory_mib(129);
  CHECK(Message(s) == "max_memory_mib must be memory_mib (128) plus a multiple of 2, at most 1048576");
  s.set_max_memory_mib(512);
  CHECK(ValidateVmSpec(s).ok());
  s = Good();
  s.set_vcpus(65);
  CHECK(Message(s) == "vcpus must be 1-64");
  s = Good();
  s.set_disk_gib(4097);
  CHECK(Message(s) == "disk_gib must be at most 4096");
}

TEST_CASE("the seed is capped as a whole, ssh keys included", "[common][vm_spec]") {
  VmSpec s = Good();
  for (int i = 0; i < 32; ++i) s.add_ssh_authorized_keys("ssh-ed25519 " + std::string(8000, 'A'));
  CHECK(Message(s) == "user_data and ssh_authorized_keys together exceed 64 KiB");
  s = Good();
  s.add_ssh_authorized_keys("ssh-ed25519 AAAA\nruncmd: [evil]");
  CHECK(Message(s).find("one line of printable ASCII") != std::string::npos);
  s = Good();
  s.set_user_data(std::string(64 * 1024 + 1, 'x'));
  CHECK(Message(s) == "user_data exceeds 64 KiB");
}

TEST_CASE("image and label names that could escape a path or a log line are refused", "[common][vm_spec]") {
  VmSpec s = Good();
  s.set_image("../ppn-test-guest");
  CHECK(Message(s).find("image must be") == 0);
  s.set_image("ppn-test-guest\nFORGED line");
  CHECK(Message(s).find("image must be") == 0);
  s = Good();
  (*s.mutable_labels())["env"] = "a b";
  CHECK(Message(s).find("labels values") == 0);
}

TEST_CASE("a tenant-chosen vm id is AIP-133 style and never of the generated form", "[common][vm_spec]") {
  CHECK(ValidateChosenVmId("web").ok());
  CHECK(ValidateChosenVmId("a").ok());
  CHECK(ValidateChosenVmId("web-2").ok());
  CHECK(ValidateChosenVmId(std::string(63, 'a')).ok());
  CHECK(!ValidateChosenVmId(std::string(64, 'a')).ok());
  CHECK(!ValidateChosenVmId("").ok());
  CHECK(!ValidateChosenVmId("2web").ok());
  CHECK(!ValidateChosenVmId("-web").ok());
  CHECK(!ValidateChosenVmId("Web").ok());
  CHECK(!ValidateChosenVmId("web_1").ok());
  CHECK(ValidateChosenVmId("vm-0123abc").ok());  // not the generated length
  const std::string generated = "vm-0190a1b2c3d4e5f6a7b";
  CHECK(IsGeneratedVmId(generated));
  CHECK(ValidateChosenVmId(generated).message() == "vm_id has the form of a generated id (vm- and 19 hex digits)");
  // Generated ids stay valid VM ids wherever ids are checked.
  CHECK(ValidateVmId(generated).ok());
  CHECK(ValidateVmId(std::string(63, 'a')).ok());
}

TEST_CASE("ids and time conversions stay in range", "[common][vm_spec]") {
  CHECK(ValidateVmId("vm-0123abc").ok());
  CHECK(!ValidateVmId("VM").ok());
  CHECK(!ValidateVmId(std::string(65, 'a')).ok());
  CHECK(ValidateTenantId("acme").ok());
  CHECK(!ValidateTenantId("acme\n").ok());
  google::protobuf::Duration d;
  d.set_seconds(int64_t{1} << 62);
  absl::Duration out;
  CHECK(ToAbslDuration(d, "interval", &out).code() == absl::StatusCode::kInvalidArgument);
  CHECK(IsValidTimestamp(ToProtoTimestamp(absl::InfiniteFuture())));
  CHECK(IsValidTimestamp(ToProtoTimestamp(absl::FromUnixSeconds(1700000000))));
  CHECK(ToProtoTimestamp(absl::FromUnixMicros(-1)).nanos() == 999999000);
}

ppn::types::v1::EgressRule Rule(const std::string& cidr, uint32_t first = 0, uint32_t last = 0) {
  ppn::types::v1::EgressRule r;
  r.set_cidr(cidr);
  r.set_port_first(first);
  r.set_port_last(last);
  return r;
}

TEST_CASE("egress policies are validated with the spec", "[common][vm_spec][egress]") {
  VmSpec s = Good();
  *s.mutable_egress()->add_allow() = Rule("10.0.0.0/33");
  CHECK(Message(s) == "egress.allow rule \"10.0.0.0/33\" is not an IPv4 address or CIDR");
  // Whitespace a number parser would skip could end an nftables rule early (an injected accept).
  for (const char* sneaky : {"203.0.113.5/32\n", "203.0.113.5/ 32", "203.0.113.5/+8", "203.0.113.5\n", " 203.0.113.5",
                             "203.0.113. 5", "203.0.113.5/32\naccept"}) {
    s = Good();
    *s.mutable_egress()->add_allow() = Rule(sneaky);
    INFO(sneaky);
    CHECK(Message(s) == absl::StrCat("egress.allow rule \"", sneaky, "\" is not an IPv4 address or CIDR"));
  }
  s = Good();
  *s.mutable_egress()->add_deny() = Rule("203.0.113.0/24", 90, 80);
  CHECK(Message(s) == "egress.deny rule ports must be 1-65535 with port_first <= port_last");
  s = Good();
  *s.mutable_egress()->add_deny() = Rule("203.0.113.0/24", 0, 80);
  CHECK(Message(s) == "egress.deny rules with port_last need port_first");
  s = Good();
  s.mutable_egress()->set_internet(static_cast<ppn::types::v1::InternetAccess>(7));
  CHECK(Message(s) == "egress.internet 7 is not ALLOWED or DENIED");
  s = Good();
  for (int i = 0; i < 65; ++i) *s.mutable_egress()->add_allow() = Rule("203.0.113.1");
  CHECK(Message(s) == "egress.allow may hold at most 64 rules");
  s = Good();
  *s.mutable_egress()->add_allow() = Rule("203.0.113.7", 443, 443);
  s.mutable_egress()->set_rate_limit_kbit(1000);
  CHECK(ValidateVmSpec(s).ok());
}

TEST_CASE("a VM's egress can only narrow its tenant's", "[common][vm_spec][egress]") {
  using ppn::types::v1::EgressPolicy;
  EgressPolicy tenant;
  tenant.set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  *tenant.add_allow() = Rule("203.0.113.0/24", 443, 443);
  *tenant.add_deny() = Rule("203.0.113.66");
  tenant.set_rate_limit_kbit(5000);
  EgressPolicy vm;
  vm.set_internet(ppn::types::v1::INTERNET_ACCESS_ALLOWED);  // asks for more than allowed
  absl::StatusOr<EgressPolicy> p = NarrowEgress(tenant, vm);
  REQUIRE(p.ok());
  CHECK(p->internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
  CHECK(p->allow_size() == 1);  // the tenant's
  CHECK(p->deny_size() == 1);
  CHECK(p->rate_limit_kbit() == 5000);
  *vm.add_allow() = Rule("203.0.113.7", 443, 443);
  *vm.add_deny() = Rule("203.0.113.8");
  vm.set_rate_limit_kbit(9000);
  p = NarrowEgress(tenant, vm);
  REQUIRE(p.ok());
  CHECK(p->allow(0).cidr() == "203.0.113.7");
  CHECK(p->deny_size() == 2);
  CHECK(p->rate_limit_kbit() == 5000);
  *vm.add_allow() = Rule("198.51.100.0/24");
  CHECK(NarrowEgress(tenant, vm).status().message() ==
        "egress.allow rule 198.51.100.0/24 is outside what this "
        "tenant may reach");
  EgressPolicy open;  // no tenant default: the VM's request stands
  EgressPolicy closed;
  closed.set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  p = NarrowEgress(open, closed);
  REQUIRE(p.ok());
  CHECK(p->internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
  p = NarrowEgress(open, EgressPolicy());
  REQUIRE(p.ok());
  CHECK(p->internet() == ppn::types::v1::INTERNET_ACCESS_ALLOWED);
}

TEST_CASE("a spec names at most four distinct private networks by id", "[common][vm_spec]") {
  VmSpec s = Good();
  s.add_networks("net-1a2b");
  s.add_networks("net-3c4d");
  CHECK(ValidateVmSpec(s).ok());
  s.add_networks("net-1a2b");
  CHECK(ValidateVmSpec(s).message() == "networks names net-1a2b twice");
  s.clear_networks();
  s.add_networks("Net_1");
  CHECK(ValidateVmSpec(s).code() == absl::StatusCode::kInvalidArgument);
  s.clear_networks();
  for (int i = 0; i < 5; ++i) s.add_networks(absl::StrCat("n", i));
  CHECK(ValidateVmSpec(s).message() == "networks may list at most 4 private networks");
}

TEST_CASE("a stop's grace period is 0-600 s and a console read at most 1 MiB", "[common][vm_spec]") {
  google::protobuf::Duration d;
  absl::Duration grace;
  d.set_seconds(600);
  CHECK(ToGracePeriod(d, &grace).ok());
  CHECK(grace == absl::Minutes(10));
  d.set_seconds(601);
  CHECK(ToGracePeriod(d, &grace).message() == "grace_period must be 0-600 s");
  d.set_seconds(-1);
  CHECK(ToGracePeriod(d, &grace).code() == absl::StatusCode::kInvalidArgument);
  CHECK(*ToConsoleReadBytes(0) == 65536);
  CHECK(*ToConsoleReadBytes(1 << 20) == size_t{1} << 20);
  CHECK(ToConsoleReadBytes((1 << 20) + 1).status().message() == "max_bytes must be at most 1048576");
}

}  // namespace
}  // namespace ppn
