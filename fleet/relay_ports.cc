#include "fleet/relay_ports.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace ppn::fleet {
namespace {

using ppn::types::v1::Protocol;

bool ParsePort(absl::string_view text, uint32_t* port) {
  return absl::SimpleAtoi(text, port) && *port >= 1 && *port <= 65535;
}

}  // namespace

Protocol EffectiveProtocol(Protocol protocol) {
  return protocol == ppn::types::v1::PROTOCOL_UNSPECIFIED ? ppn::types::v1::PROTOCOL_TCP : protocol;
}

std::string FormatRelayPorts(const std::vector<RelayPort>& ports) {
  return absl::StrJoin(ports, ",", [](std::string* out, const RelayPort& p) {
    absl::StrAppend(out, p.protocol == ppn::types::v1::PROTOCOL_UDP ? "udp" : "tcp", "/", p.guest_port, "=",
                    p.public_port);
  });
}

absl::StatusOr<std::vector<RelayPort>> ParseRelayPorts(absl::string_view text) {
  std::vector<RelayPort> out;
  if (text.empty()) return out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::vector<absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    std::vector<absl::string_view> key = absl::StrSplit(kv[0], absl::MaxSplits('/', 1));
    RelayPort p;
    bool ok = kv.size() == 2 && key.size() == 2 && ParsePort(key[1], &p.guest_port) && ParsePort(kv[1], &p.public_port);
    if (ok && key[0] == "udp") {
      p.protocol = ppn::types::v1::PROTOCOL_UDP;
    } else if (!ok || key[0] != "tcp") {
      return absl::InvalidArgumentError(absl::StrCat("bad relay port \"", part, "\" (want tcp|udp/GUEST=PUBLIC)"));
    }
    out.push_back(p);
  }
  return out;
}

absl::StatusOr<std::pair<uint32_t, uint32_t>> ParsePortRange(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits('-', 1));
  uint32_t first = 0, last = 0;
  if (parts.size() != 2 || !ParsePort(parts[0], &first) || !ParsePort(parts[1], &last) || first > last) {
    return absl::InvalidArgumentError(
        absl::StrCat("port range \"", text, "\" is not FIRST-LAST with 1 <= FIRST <= LAST <= 65535"));
  }
  return std::make_pair(first, last);
}

void RelayPortPool::Configure(uint32_t first, uint32_t last) {
  first_ = first;
  last_ = last;
  cursor_ = last;  // the first allocation takes `first`
}

bool RelayPortPool::Claim(uint32_t port, const std::string& vm_id) {
  if (!enabled() || port < first_ || port > last_) return false;
  auto [it, inserted] = owner_.emplace(port, vm_id);
  if (!inserted) return it->second == vm_id;
  by_vm_[vm_id].insert(port);
  return true;
}

std::optional<uint32_t> RelayPortPool::Allocate(const std::string& vm_id) {
  if (!enabled()) return std::nullopt;
  uint32_t size = last_ - first_ + 1;
  uint32_t start = cursor_ < first_ || cursor_ > last_ ? last_ : cursor_;
  for (uint32_t i = 1; i <= size; ++i) {
    uint32_t port = first_ + (start - first_ + i) % size;
    if (owner_.count(port) != 0) continue;
    owner_[port] = vm_id;
    by_vm_[vm_id].insert(port);
    cursor_ = port;
    return port;
  }
  return std::nullopt;
}

void RelayPortPool::ReleaseExcept(const std::string& vm_id, const std::set<uint32_t>& keep) {
  auto it = by_vm_.find(vm_id);
  if (it == by_vm_.end()) return;
  for (auto port = it->second.begin(); port != it->second.end();) {
    if (keep.count(*port) != 0) {
      ++port;
      continue;
    }
    owner_.erase(*port);
    port = it->second.erase(port);
  }
  if (it->second.empty()) by_vm_.erase(it);
}

size_t RelayPortPool::available() const { return enabled() ? (last_ - first_ + 1) - owner_.size() : 0; }

}  // namespace ppn::fleet
