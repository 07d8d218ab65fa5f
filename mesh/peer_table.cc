#include "mesh/peer_table.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/spiffe_id.h"
#include "mesh/wireguard_key.h"

namespace ppn::mesh {
namespace {

using ppn::ledger::v1::Entry;

std::string Attribute(const Entry& e, const char* name) {
  auto it = e.attributes().find(name);
  return it == e.attributes().end() ? "" : it->second;
}

}  // namespace

absl::StatusOr<PeerTable> PeerTable::Create(PeerTableOptions options) {
  if (options.self.empty()) return absl::InvalidArgumentError("the peer table needs this node's name");
  absl::StatusOr<Ipv4Prefix> prefix = ParseIpv4Prefix(options.mesh_prefix);
  if (!prefix.ok()) return absl::InvalidArgumentError(absl::StrCat("mesh prefix: ", prefix.status().message()));
  if (prefix->length > 30) return absl::InvalidArgumentError("the mesh prefix must be /30 or wider");
  for (const auto& [name, key] : options.granted_keys) {
    if (!IsWireGuardKey(key)) {
      return absl::InvalidArgumentError(absl::StrCat("the granted key of node ", name, " is not a WireGuard key"));
    }
  }
  return PeerTable(std::move(options), *prefix);
}

std::optional<std::string> PeerTable::CheckJoin(const Entry& e) const {
  const std::string& name = e.subject();
  if (!IsValidIdPart(name) || name.find('.') != std::string::npos) {
    return absl::StrCat("node name \"", name.substr(0, 63), "\" is not valid");
  }
  std::string key = Attribute(e, kPublicKeyAttribute);
  std::string address_text = Attribute(e, kMeshAddressAttribute);
  std::string endpoint = Attribute(e, kEndpointAttribute);
  if (!IsWireGuardKey(key)) {
    return absl::StrCat(kPublicKeyAttribute, " is not a WireGuard public key (44 characters of base64 for 32 bytes)");
  }
  if (auto revoked = revoked_keys_.find(key); revoked != revoked_keys_.end()) {
    return absl::StrCat("the key was revoked with node ", revoked->second, " and stays refused");
  }
  auto granted = options_.granted_keys.find(name);
  if (granted != options_.granted_keys.end() && granted->second != key && revoked_names_.count(name) == 0) {
    return absl::StrCat("the key differs from the one this node's grant names for ", name);
  }
  std::optional<uint32_t> address = ParseIpv4(address_text);
  if (!address.has_value() || !prefix_.Contains(*address) || *address == prefix_.network ||
      *address == prefix_.Broadcast()) {
    return absl::StrCat(kMeshAddressAttribute, " \"", address_text.substr(0, 64), "\" is outside the mesh prefix ",
                        prefix_.ToString());
  }
  if (!endpoint.empty() && !IsValidEndpoint(endpoint)) {
    return absl::StrCat(kEndpointAttribute, " \"", endpoint.substr(0, 64), "\" is not host:port");
  }
  auto existing = live_.find(name);
  if (existing != live_.end() && existing->second.public_key != key) {
    return absl::StrCat("node ", name, " is a member with another key (joined at index ", existing->second.join_index,
                        "); revoke it before it joins with a new one");
  }
  for (const auto& [other_name, other] : live_) {
    if (other_name == name) continue;
    if (other.mesh_address == address_text) {
      return absl::StrCat(kMeshAddressAttribute, " ", address_text, " is held by node ", other_name);
    }
    if (other.public_key == key) return absl::StrCat("the key is held by node ", other_name);
  }
  return std::nullopt;
}

std::optional<std::string> PeerTable::ApplyRevoke(const Entry& e) {
  auto live = live_.find(e.subject());
  if (live == live_.end()) return absl::StrCat("node \"", e.subject().substr(0, 63), "\" is not a live member");
  revoked_keys_[live->second.public_key] = live->first;
  revoked_names_.insert(live->first);
  live_.erase(live);
  return std::nullopt;
}

std::optional<Rejection> PeerTable::Apply(const Entry& e) {
  if (e.index() < next_index_) return std::nullopt;  // a repeat after a reconnect
  next_index_ = e.index() + 1;
  bool join = e.kind() == "node.join";
  if ((!join && e.kind() != "node.revoke") || e.outcome() != ppn::ledger::v1::OUTCOME_SUCCESS) return std::nullopt;
  std::optional<std::string> reason;
  if (join) {
    reason = CheckJoin(e);
    if (!reason.has_value()) {
      MeshNode& node = live_[e.subject()];
      if (node.name.empty()) node.join_index = e.index();
      node.name = e.subject();
      node.public_key = Attribute(e, kPublicKeyAttribute);
      node.mesh_address = Attribute(e, kMeshAddressAttribute);
      node.endpoint = Attribute(e, kEndpointAttribute);
      node.agent_address = Attribute(e, kAgentAddressAttribute);
    }
  } else {
    reason = ApplyRevoke(e);
  }
  if (!reason.has_value()) return std::nullopt;
  Rejection r{e.index(), e.kind(), e.subject().substr(0, 63), *reason};
  rejections_.push_back(r);
  if (rejections_.size() > kMaxRejections) rejections_.erase(rejections_.begin());
  return r;
}

std::vector<MeshNode> PeerTable::LiveNodes() const {
  std::vector<MeshNode> out;
  for (const auto& [name, node] : live_) out.push_back(node);
  return out;
}

PeerTableView PeerTable::Compute() const {
  PeerTableView view;
  auto self = live_.find(options_.self);
  if (self == live_.end()) {
    view.self_revoked = revoked_names_.count(options_.self) > 0;
    return view;
  }
  view.self = self->second;
  const bool self_reachable = !self->second.endpoint.empty();
  auto hub = options_.hub.empty() ? live_.end() : live_.find(options_.hub);
  view.forwarding = hub != live_.end() && hub == self;
  // A spoke uses the hub only when it can reach it: one of the two has an endpoint.
  const bool use_hub = hub != live_.end() && hub != self && (self_reachable || !hub->second.endpoint.empty());
  for (const auto& [name, node] : live_) {
    if (name == options_.self) continue;
    if (!self_reachable && node.endpoint.empty()) {
      if (use_hub) {
        view.via_hub.push_back(name);
      } else {
        view.unreachable.push_back({name, hub == live_.end() || hub == self
                                              ? "neither node has a WireGuard endpoint and no hub routes between them"
                                              : absl::StrCat("neither node has a WireGuard endpoint and the hub ",
                                                             hub->first, " has none either")});
      }
      continue;
    }
    MeshPeer peer;
    peer.node_name = name;
    peer.public_key = node.public_key;
    peer.mesh_address = node.mesh_address;
    peer.endpoint = node.endpoint;
    peer.persistent_keepalive_seconds = !self_reachable || node.endpoint.empty() ? kNatKeepaliveSeconds : 0;
    if (use_hub && name == hub->first) {
      peer.hub = true;
      peer.allowed_ips = {prefix_.ToString()};
    } else {
      peer.allowed_ips = {node.mesh_address + "/32"};
    }
    view.peers.push_back(std::move(peer));
  }
  std::sort(view.peers.begin(), view.peers.end(), [](const MeshPeer& a, const MeshPeer& b) {
    return ParseIpv4(a.mesh_address).value_or(0) < ParseIpv4(b.mesh_address).value_or(0);
  });
  return view;
}

}  // namespace ppn::mesh
