#include "host_agent/mesh_runner.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/vm_spec.h"
#include "mesh/addresses.h"
#include "mesh/wireguard_key.h"
#include "nlohmann/json.hpp"

namespace ppn::host {
namespace {

// The string at `key` of `doc`, or INVALID_ARGUMENT naming it.
absl::StatusOr<std::string> Field(const nlohmann::json& doc, const std::string& key, const std::string& where) {
  auto it = doc.find(key);
  if (it == doc.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" is missing or not a string"));
  }
  return it->get<std::string>();
}

}  // namespace

absl::StatusOr<MeshGrant> LoadMeshGrant(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("the node's grant: ", text.status().message()));
  }
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  MeshGrant g;
  absl::StatusOr<std::string> name = Field(doc, "name", path);
  absl::StatusOr<std::string> address = Field(doc, "mesh_address", path);
  absl::StatusOr<std::string> key_file = Field(doc, "wireguard_key_file", path);
  for (const auto* s : {&name, &address, &key_file}) {
    if (!s->ok()) return s->status();
  }
  g.node_name = *name;
  g.mesh_address = *address;
  if (!mesh::ParseIpv4(g.mesh_address).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": mesh_address \"", g.mesh_address, "\" is not IPv4"));
  }
  if (doc.contains("mesh_prefix_length")) {
    if (!doc["mesh_prefix_length"].is_number_integer() || doc["mesh_prefix_length"].get<int>() < 8 ||
        doc["mesh_prefix_length"].get<int>() > 30) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": mesh_prefix_length must be 8-30"));
    }
    g.prefix_length = doc["mesh_prefix_length"].get<int>();
  }
  std::filesystem::path kf(*key_file);
  g.key_file = kf.is_absolute() ? kf.string() : (std::filesystem::path(path).parent_path() / kf).string();
  if (doc.contains("wireguard_endpoint") && doc["wireguard_endpoint"].is_string()) {
    g.endpoint = doc["wireguard_endpoint"].get<std::string>();
  }
  auto keys = doc.find("granted_wireguard_keys");
  if (keys == doc.end() || !keys->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"granted_wireguard_keys\" is missing"));
  }
  for (const auto& [node, key] : keys->items()) {
    if (!key.is_string() || !mesh::IsWireGuardKey(key.get<std::string>())) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the granted key of ", node.substr(0, 63), " is not a WireGuard public key"));
    }
    g.granted_keys[node] = key.get<std::string>();
  }
  if (g.granted_keys.count(g.node_name) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the grant names no key for this node"));
  }
  auto founding = doc.find("founding_node");
  if (founding == doc.end() || !founding->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " does not name the founding node (a grant from before the mesh ran WireGuard): pair ",
                     "this node again"));
  }
  const std::string where = path + ": founding_node";
  FoundingPeer f;
  absl::StatusOr<std::string> fname = Field(*founding, "name", where);
  absl::StatusOr<std::string> faddress = Field(*founding, "mesh_address", where);
  absl::StatusOr<std::string> fkey = Field(*founding, "wireguard_public_key", where);
  absl::StatusOr<std::string> fendpoint = Field(*founding, "wireguard_endpoint", where);
  for (const auto* s : {&fname, &faddress, &fkey, &fendpoint}) {
    if (!s->ok()) return s->status();
  }
  f = {*fname, *faddress, *fkey, *fendpoint};
  if (!mesh::IsWireGuardKey(f.public_key)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": wireguard_public_key is not a WireGuard public key"));
  }
  if (!mesh::ParseIpv4(f.mesh_address).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": mesh_address \"", f.mesh_address, "\" is not IPv4"));
  }
  if (!f.endpoint.empty() && !mesh::IsValidEndpoint(f.endpoint)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": wireguard_endpoint \"", f.endpoint, "\" is not host:port"));
  }
  auto granted = g.granted_keys.find(f.name);
  if (granted != g.granted_keys.end() && granted->second != f.public_key) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": its key is not the one the grant names for ", f.name));
  }
  g.granted_keys[f.name] = f.public_key;
  g.founding = f;
  return g;
}

absl::StatusOr<mesh::UpResult> BootstrapDevice::Up() {
  absl::StatusOr<mesh::UpResult> up = inner_->Up();
  if (!up.ok() || !founding_.has_value()) return up;
  absl::StatusOr<mesh::DeviceState> state = inner_->State();
  if (!state.ok()) return state.status();
  for (const mesh::PeerState& p : state->peers) {
    if (p.public_key == founding_->public_key) return up;  // adopted with its peers
  }
  mesh::PeerUpdate add;
  add.peer = *founding_;
  absl::Status added = inner_->UpdatePeers({add});
  if (!added.ok()) {
    return absl::Status(added.code(),
                        absl::StrCat("configuring the founding node as the first peer: ", added.message()));
  }
  return up;
}

ppn::types::v1::MeshStatus MeshStatusProto(const mesh::MeshStatus& s, const std::string& configured_address) {
  ppn::types::v1::MeshStatus out;
  out.set_mesh_address(configured_address);
  out.set_backend(s.backend);
  out.set_tunnel_up(s.tunnel_up && s.caught_up && s.joined && !s.revoked);
  auto problem = [&](std::string p) { out.add_problems(std::move(p)); };
  if (!s.tunnel_error.empty()) {
    problem(absl::StrCat("tunnel: ", s.tunnel_error));
  } else if (!s.tunnel_up) {
    problem(absl::StrCat("tunnel: interface ", s.interface_name, " is down"));
  }
  if (!s.membership_error.empty()) problem(absl::StrCat("ledger: ", s.membership_error));
  if (!s.caught_up) {
    problem(absl::StrCat("ledger: still reading the membership (", s.ledger_next_index,
                         " entries so far); the peers stay as they were until then"));
  } else if (s.revoked) {
    problem("this node was revoked from the mesh: it has no peers");
  } else if (!s.joined) {
    problem("the ledger has no node.join for this node: it has no peers");
  } else if (s.mesh_address != configured_address) {
    problem(absl::StrCat("the ledger gives this node mesh address ", s.mesh_address, ", but it runs with ",
                         configured_address));
  }
  for (const mesh::UnreachableNode& u : s.unreachable)
    problem(absl::StrCat("no path to ", u.node_name, ": ", u.reason));
  for (const mesh::Rejection& r : s.rejected) {
    problem(absl::StrCat("ledger entry ", r.index, " (", r.kind, " ", r.subject, ") refused: ", r.reason));
  }
  for (const mesh::MeshPeerStatus& p : s.peers) {
    ppn::types::v1::MeshPeer* peer = out.add_peers();
    peer->set_node_id(p.node_name);
    peer->set_mesh_address(p.mesh_address);
    peer->set_endpoint(p.endpoint);
    if (p.latest_handshake != absl::InfinitePast()) {
      *peer->mutable_last_handshake_time() = ToProtoTimestamp(p.latest_handshake);
    }
    peer->set_rx_bytes(p.rx_bytes);
    peer->set_tx_bytes(p.tx_bytes);
  }
  for (const std::string& name : s.via_hub) {
    ppn::types::v1::MeshPeer* peer = out.add_peers();
    peer->set_node_id(name);
    peer->set_via_hub(true);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MeshRunner>> MeshRunner::Create(MeshRunnerOptions options, mesh::Device* device,
                                                               mesh::MembershipSource* source, Clock* clock) {
  if (!mesh::ParseIpv4(options.mesh_address).has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mesh_address \"", options.mesh_address, "\" is not an IPv4 address"));
  }
  std::optional<mesh::PeerConfig> founding;
  std::map<std::string, std::string> granted = {{options.node_id, options.public_key}};
  if (options.grant.has_value()) {
    const MeshGrant& g = *options.grant;
    if (g.node_name != options.node_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("the grant is node ", g.node_name, "'s, but this agent is --node_id=", options.node_id));
    }
    if (g.mesh_address != options.mesh_address) {
      return absl::InvalidArgumentError(absl::StrCat("the grant gives this node mesh address ", g.mesh_address,
                                                     ", but --mesh_address is ", options.mesh_address));
    }
    if (g.granted_keys.at(g.node_name) != options.public_key) {
      return absl::InvalidArgumentError("the WireGuard key file does not hold the key the grant names for this node");
    }
    granted = g.granted_keys;
    if (g.founding.has_value() && g.founding->name != options.node_id) {
      mesh::PeerConfig p;
      p.public_key = g.founding->public_key;
      p.endpoint = g.founding->endpoint;
      p.allowed_ips = {g.founding->mesh_address + "/32"};
      // As the peer table will: keep a NAT mapping open when either side has no endpoint.
      if (g.founding->endpoint.empty() || g.endpoint.empty())
        p.persistent_keepalive_seconds = mesh::kNatKeepaliveSeconds;
      founding = p;
    }
  }
  options.agent.table.self = options.node_id;
  options.agent.table.hub = options.hub;
  options.agent.table.granted_keys = granted;
  auto bootstrap = std::make_unique<BootstrapDevice>(device, founding);
  absl::StatusOr<std::unique_ptr<mesh::MeshAgent>> agent =
      mesh::MeshAgent::Create(options.agent, bootstrap.get(), source, clock);
  if (!agent.ok()) return agent.status();
  std::unique_ptr<MeshRunner> runner(new MeshRunner(std::move(options), std::move(bootstrap)));
  runner->agent_ = *std::move(agent);
  return runner;
}

absl::Status MeshRunner::Start() {
  // One pass here: the interface is up (or the reason it cannot be) before the agent serves
  // on its mesh address.
  agent_->RunOnce(absl::ZeroDuration());
  mesh::MeshStatus s = agent_->Snapshot();
  if (!s.tunnel_up) {
    return absl::FailedPreconditionError(
        absl::StrCat("the WireGuard interface ", s.interface_name,
                     " cannot come up: ", s.tunnel_error.empty() ? "it is down" : s.tunnel_error,
                     " (traffic between nodes never goes in clear: fix this, or run one machine's mesh without "
                     "--wireguard)"));
  }
  agent_->Start();
  return absl::OkStatus();
}

void MeshRunner::Stop() {
  if (agent_ != nullptr) agent_->Stop();
}

ppn::types::v1::MeshStatus MeshRunner::Status() { return MeshStatusProto(agent_->Snapshot(), options_.mesh_address); }

}  // namespace ppn::host
