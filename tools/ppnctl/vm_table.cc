#include "tools/ppnctl/vm_table.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace ppn::ppnctl {
namespace {

using ppn::tenancy::v1::Vm;

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

// Columns are padded by their width on screen: "→" is three bytes but one column.
size_t Columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], Columns(row[i]));
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&out, row[i], i + 1 < row.size() ? std::string(width[i] - Columns(row[i]) + 2, ' ') : "");
    }
    out += "\n";
  }
  return out;
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// "env=ci,team=web" in key order (what --filter=labels.KEY=VALUE selects), or "-".
std::string Labels(const ppn::types::v1::VmSpec& spec) {
  std::map<std::string, std::string> sorted(spec.labels().begin(), spec.labels().end());
  return sorted.empty() ? "-" : absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

}  // namespace

std::string ShortAge(absl::Time then, absl::Time now) {
  if (then == absl::UnixEpoch()) return "-";
  int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(now - then));
  if (s < 120) return absl::StrCat(s, "s");
  if (s < 120 * 60) return absl::StrCat(s / 60, "m");
  if (s < 48 * 3600) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

namespace {

std::string PortList(const google::protobuf::RepeatedPtrField<ppn::types::v1::ForwardedPort>& ports) {
  std::vector<std::string> out;
  for (const auto& p : ports) {
    bool pub = !p.public_address().empty() && p.public_port() != 0;
    std::string protocol =
        absl::AsciiStrToLower(absl::StripPrefix(ppn::types::v1::Protocol_Name(p.protocol()), "PROTOCOL_"));
    if (protocol == "unspecified") protocol = "tcp";
    out.push_back(absl::StrCat(pub ? p.public_address() : p.host_address(), ":", pub ? p.public_port() : p.host_port(),
                               "\xE2\x86\x92", p.guest_port(), "/", protocol));
  }
  return out.empty() ? "-" : absl::StrJoin(out, ", ");
}

}  // namespace

std::string Addresses(const Vm& vm) { return PortList(vm.forwarded_ports()); }

std::string RenderFleetVms(const ppn::fleet::v1::ListVmsResponse& vms, absl::Time now, bool wide) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"NAME", "TENANT", "STATE", "AGE", "ADDRESS", "NODE"};
  if (wide) header.insert(header.end(), {"VCPUS", "MEMORY_MIB", "IMAGE", "PINNED", "MESSAGE", "VM_ID"});
  rows.push_back(header);
  for (const auto& vm : vms.vms()) {
    std::vector<std::string> row = {
        OrDash(vm.name().empty() ? vm.vm_id() : vm.name()),
        OrDash(vm.tenant_id()),
        std::string(absl::StripPrefix(ppn::types::v1::VmState_Name(vm.state()), "VM_STATE_")),
        vm.has_create_time() ? ShortAge(FromProto(vm.create_time()), now) : "-",
        PortList(vm.forwarded_ports()),
        OrDash(vm.node_id())};
    if (wide) {
      row.insert(row.end(),
                 {absl::StrCat(vm.spec().vcpus()), absl::StrCat(vm.spec().memory_mib()), OrDash(vm.spec().image()),
                  OrDash(vm.pinned_node_id()), OrDash(vm.state_message()), OrDash(vm.vm_id())});
    }
    rows.push_back(std::move(row));
  }
  std::string out = Table(rows);
  if (!vms.next_page_token().empty()) absl::StrAppend(&out, "more: --page_token=", vms.next_page_token(), "\n");
  return out;
}

std::string RenderVms(const ppn::tenancy::v1::ListVmsResponse& vms, absl::Time now, bool wide) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"NAME", "STATE", "AGE", "ADDRESS"};
  if (wide) {
    header.insert(header.end(),
                  {"VCPUS", "MEMORY_MIB", "IMAGE", "DISPLAY_NAME", "EXPIRES", "MESSAGE", "VM_ID", "LABELS"});
  }
  rows.push_back(header);
  for (const Vm& vm : vms.vms()) {
    std::vector<std::string> row = {
        OrDash(vm.name()), std::string(absl::StripPrefix(ppn::types::v1::VmState_Name(vm.state()), "VM_STATE_")),
        vm.has_create_time() ? ShortAge(FromProto(vm.create_time()), now) : "-", Addresses(vm)};
    if (wide) {
      std::string expires = "-";
      if (vm.has_expire_time()) {
        absl::Time at = FromProto(vm.expire_time());
        expires = at <= now ? "now" : absl::StrCat("in ", ShortAge(now, at));
      }
      row.insert(row.end(), {absl::StrCat(vm.spec().vcpus()), absl::StrCat(vm.spec().memory_mib()),
                             OrDash(vm.spec().image()), OrDash(vm.spec().display_name()), expires,
                             OrDash(vm.state_message()), OrDash(vm.vm_id()), Labels(vm.spec())});
    }
    rows.push_back(std::move(row));
  }
  std::string out = Table(rows);
  if (!vms.next_page_token().empty()) absl::StrAppend(&out, "more: --page_token=", vms.next_page_token(), "\n");
  return out;
}

std::string DescribeMemory(const ppn::tenancy::v1::Vm& vm) {
  if (!vm.has_memory() || vm.memory().max_mib() == 0) return absl::StrCat("memory: ", vm.spec().memory_mib(), " MiB\n");
  const ppn::types::v1::MemoryStatus& m = vm.memory();
  return absl::StrCat("memory: ", m.actual_mib(), " MiB now, balloon target ",
                      m.balloon_target_mib() == 0 ? "none" : absl::StrCat(m.balloon_target_mib(), " MiB"), ", maximum ",
                      m.max_mib(), " MiB\n");
}

}  // namespace ppn::ppnctl
