#include "tools/ppnctl/node_table.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace ppn::ppnctl {
namespace {

using ppn::fleet::v1::Node;

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

std::string Age(absl::Time then, absl::Time now) {
  int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(now - then));  // a node's clock ahead of ours: now
  if (s < 120) return absl::StrCat(s, "s ago");
  if (s < 120 * 60) return absl::StrCat(s / 60, "m ago");
  if (s < 48 * 3600) return absl::StrCat(s / 3600, "h ago");
  return absl::StrCat(s / 86400, "d ago");
}

std::string Bytes(uint64_t n) {
  if (n < 1024) return absl::StrCat(n, " B");
  if (n < (uint64_t{1} << 20)) return absl::StrCat(n >> 10, " KiB");
  if (n < (uint64_t{1} << 30)) return absl::StrCat(n >> 20, " MiB");
  return absl::StrCat(n >> 30, " GiB");
}

std::string Short(const std::string& enum_name, const std::string& prefix) {
  return std::string(absl::StripPrefix(enum_name, prefix));
}

}  // namespace

std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&out, row[i], i + 1 < row.size() ? std::string(width[i] - row[i].size() + 2, ' ') : "");
    }
    out += "\n";
  }
  return out;
}

std::string TunnelState(const Node& node) {
  if (!node.has_mesh()) return "none";
  return node.mesh().tunnel_up() ? "up" : "down";
}

std::string LastHandshake(const Node& node, absl::Time now) {
  if (!node.has_mesh()) return "-";
  bool any = false;
  absl::Time latest = absl::InfinitePast();
  for (const auto& p : node.mesh().peers()) {
    if (p.via_hub()) continue;
    any = true;
    if (p.has_last_handshake_time()) latest = std::max(latest, FromProto(p.last_handshake_time()));
  }
  if (!any) return "-";
  return latest == absl::InfinitePast() ? "never" : Age(latest, now);
}

std::string RenderNodes(const ppn::fleet::v1::ListNodesResponse& nodes, absl::Time now, bool wide) {
  std::vector<std::vector<std::string>> rows;
  // Name first, then state and address, as kubectl and incus print them.
  std::vector<std::string> header = {"NAME",          "STATE", "ADDRESS",      "KVM",    "CPUS",     "MEMORY_MIB",
                                     "RECLAIMED_MIB", "VMS",   "MESH_ADDRESS", "TUNNEL", "HANDSHAKE"};
  if (wide) header.insert(header.end(), {"BACKEND", "LAST_HEARTBEAT"});
  rows.push_back(header);
  std::vector<std::string> notes;
  std::vector<std::vector<std::string>> peers = {
      {"NAME", "PEER", "MESH_ADDRESS", "ENDPOINT", "HANDSHAKE", "RX", "TX", "ROUTE"}};
  for (const Node& n : nodes.nodes()) {
    // As kubectl's "Ready,SchedulingDisabled": the liveness and the cordon in one column.
    std::string state = Short(ppn::fleet::v1::NodeState_Name(n.state()), "NODE_STATE_");
    if (n.cordoned()) absl::StrAppend(&state, ",CORDONED");
    std::vector<std::string> row = {n.node_id(),
                                    state,
                                    n.agent_address(),
                                    n.kvm() == ppn::types::v1::KVM_SUPPORT_UNSPECIFIED
                                        ? "-"
                                        : Short(ppn::types::v1::KvmSupport_Name(n.kvm()), "KVM_SUPPORT_"),
                                    absl::StrCat(n.cpus()),
                                    absl::StrCat(n.available_memory_mib(), "/", n.total_memory_mib()),
                                    absl::StrCat(n.reclaimed_memory_mib()),
                                    absl::StrCat(n.vm_count()),
                                    n.has_mesh() && !n.mesh().mesh_address().empty() ? n.mesh().mesh_address() : "-",
                                    TunnelState(n),
                                    LastHandshake(n, now)};
    if (wide) {
      row.push_back(n.has_mesh() && !n.mesh().backend().empty() ? n.mesh().backend() : "-");
      row.push_back(n.has_last_heartbeat_time() ? Age(FromProto(n.last_heartbeat_time()), now) : "never");
    }
    rows.push_back(std::move(row));
    if (n.cordoned() && !n.cordon_reason().empty()) {
      notes.push_back(absl::StrCat(n.node_id(), ": cordoned: ", n.cordon_reason()));
    }
    for (const std::string& p : n.mesh().problems()) notes.push_back(absl::StrCat(n.node_id(), ": mesh: ", p));
    for (const std::string& w : n.warnings()) notes.push_back(absl::StrCat(n.node_id(), ": warning: ", w));
    for (const auto& p : n.mesh().peers()) {
      if (p.via_hub()) {
        peers.push_back({n.node_id(), p.node_id(), "-", "-", "-", "-", "-", "via the hub"});
        continue;
      }
      peers.push_back({n.node_id(), p.node_id(), p.mesh_address().empty() ? "-" : p.mesh_address(),
                       p.endpoint().empty() ? "-" : p.endpoint(),
                       p.has_last_handshake_time() ? Age(FromProto(p.last_handshake_time()), now) : "never",
                       Bytes(p.rx_bytes()), Bytes(p.tx_bytes()), "direct"});
    }
  }
  std::string out = Table(rows);
  if (wide && peers.size() > 1) absl::StrAppend(&out, "\n", Table(peers));
  if (!notes.empty()) absl::StrAppend(&out, "\n", absl::StrJoin(notes, "\n"), "\n");
  return out;
}

}  // namespace ppn::ppnctl
