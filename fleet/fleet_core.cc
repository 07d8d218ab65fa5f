#include "fleet/fleet_core.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "fleet/spec_fingerprint.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::VmRecord;
using ppn::types::v1::VmState;

constexpr char kShortagePayload[] = "type.ppn/ppn.fleet.Shortage";

absl::Status ShortageError(Shortage shortage, const std::string& message) {
  absl::Status s = absl::ResourceExhaustedError(message);
  s.SetPayload(kShortagePayload, absl::Cord(ShortageName(shortage)));
  return s;
}

// True if the node may have done what it was asked: its answer never arrived.
bool OutcomeUnknown(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded;
}

// A spawn error that another node would give too. What a tenant may read: no node, no path,
// no other image.
std::optional<absl::Status> Definitive(const absl::Status& s, const ppn::types::v1::VmSpec& spec) {
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      return absl::InvalidArgumentError(absl::StrCat("image ", spec.image(), " is not offered"));
    case absl::StatusCode::kInvalidArgument: return absl::InvalidArgumentError("the VM's spec was refused by its host");
    case absl::StatusCode::kAlreadyExists: return absl::AbortedError("the VM's id is already taken on its host; retry");
    default: return std::nullopt;
  }
}

// The one test for a destroyed record (what the tenant no longer has or pays for).
bool Destroyed(const VmRecord& r) { return r.state() == ppn::types::v1::VM_STATE_DESTROYED; }

// What a node answered a spawn with, onto the fleet's record: state, accelerator, ports,
// readiness and the private NICs' MACs (only when it answered for every NIC the record has).
void TakeSpawned(const ppn::host::v1::VmInstance& spawned, VmRecord* r) {
  r->set_state(spawned.state());
  r->set_state_message(spawned.state_message());
  r->set_accelerator(spawned.accelerator());
  *r->mutable_forwarded_ports() = spawned.forwarded_ports();
  if (spawned.has_ready_time() && IsValidTimestamp(spawned.ready_time())) {
    *r->mutable_ready_time() = spawned.ready_time();
    if (IsValidDuration(spawned.boot_duration())) *r->mutable_boot_duration() = spawned.boot_duration();
  }
  if (spawned.private_nics_size() == r->private_nics_size()) *r->mutable_private_nics() = spawned.private_nics();
}

absl::Status VmNotFound(const std::string& ref) {
  return absl::NotFoundError(absl::StrCat("vm ", ref.substr(0, 64), " not found"));
}

std::string PageKey(const std::string& configured, RandomSource* random) {
  if (!configured.empty()) return configured;
  std::string key(32, '\0');
  if (!random->Fill(reinterpret_cast<uint8_t*>(key.data()), key.size()).ok()) {
    // Without randomness every token would verify against a known key: refuse them all instead.
    spdlog::error("fleet.page_key_failed: ListVms page tokens will be refused");
    return "";
  }
  return key;
}

}  // namespace

Shortage ShortageOf(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kResourceExhausted) return Shortage::kNone;
  absl::optional<absl::Cord> p = status.GetPayload(kShortagePayload);
  if (!p.has_value()) return Shortage::kNone;
  for (Shortage s : {Shortage::kMemory, Shortage::kDisk, Shortage::kNodes}) {
    if (*p == ShortageName(s)) return s;
  }
  return Shortage::kNone;
}

FleetCore::FleetCore(Deps deps, Options options)
    : deps_(deps),
      options_(options),
      log_(deps.ledger, deps.clock),
      page_tokens_(PageKey(options.page_token_key, deps.random)),
      registry_(deps.store),
      reconciler_(&registry_, &log_, options.heartbeat_interval) {
  if (!options.relay_address.empty()) {
    registry_.ConfigureRelay(options.relay_address, options.relay_first_port, options.relay_last_port);
  }
  absl::StatusOr<NetworkPool> pool = NetworkPool::Make(options.private_network_pool);
  absl::MutexLock l(&mu_);
  if (pool.ok()) networks_ = *std::move(pool);
}

absl::Status FleetCore::Load() {
  absl::MutexLock l(&mu_);
  absl::Time now = deps_.clock->Now();
  reconciler_.Started(now);
  PPN_ASSIGN_OR_RETURN(std::vector<StoredNetwork> networks, deps_.store->LoadNetworks());
  networks_.Load(std::move(networks));
  PPN_ASSIGN_OR_RETURN(auto cordons, deps_.store->LoadCordons());
  for (const auto& [node_id, reason] : cordons) registry_.SetCordon(node_id, true, reason);
  return registry_.Load(now);
}

absl::StatusOr<ppn::types::v1::Network> FleetCore::CreateNetwork(const Scope& scope, const std::string& name) {
  if (!scope.tenant_id.has_value()) return absl::PermissionDeniedError("only the tenant proxy creates networks");
  uint8_t rnd[6];
  PPN_RETURN_IF_ERROR(deps_.random->Fill(rnd, sizeof rnd));
  std::string id = "net-";
  for (uint8_t b : rnd) absl::StrAppend(&id, absl::Hex(b, absl::kZeroPad2));
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(StoredNetwork n,
                       networks_.Make(*scope.tenant_id, name, id, absl::ToUnixSeconds(deps_.clock->Now())));
  PPN_RETURN_IF_ERROR(deps_.store->PutNetwork(n));
  networks_.Add(n);
  spdlog::info("network.created network={} tenant={} cidr={}", id, LogValue(*scope.tenant_id), networks_.Cidr(n));
  return networks_.View(n);
}

absl::StatusOr<ppn::types::v1::Network> FleetCore::GetNetwork(const Scope& scope, const std::string& network_id) {
  absl::MutexLock l(&mu_);
  const StoredNetwork* n = networks_.Find(scope.tenant_id.value_or(""), network_id);
  if (n == nullptr) return NetworkNotFound(network_id);
  return networks_.View(*n);
}

std::vector<ppn::types::v1::Network> FleetCore::ListNetworks(const Scope& scope) {
  absl::MutexLock l(&mu_);
  std::vector<ppn::types::v1::Network> out;
  for (const StoredNetwork& n : networks_.List(scope.tenant_id.value_or(""))) out.push_back(networks_.View(n));
  return out;
}

absl::Status FleetCore::DeleteNetwork(const Scope& scope, const std::string& network_id) {
  absl::MutexLock l(&mu_);
  const StoredNetwork* n = networks_.Find(scope.tenant_id.value_or(""), network_id);
  if (n == nullptr) return NetworkNotFound(network_id);
  std::vector<std::string> attached;
  for (const auto& [id, e] : registry_.vms()) {
    const VmRecord& r = e.record();
    if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
    for (const std::string& net : r.spec().networks()) {
      if (net == network_id) attached.push_back(id);
    }
  }
  if (!attached.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("network ", network_id, " has VMs attached: ", absl::StrJoin(attached, ", ")));
  }
  PPN_RETURN_IF_ERROR(deps_.store->DeleteNetwork(network_id));
  networks_.Remove(network_id);
  spdlog::info("network.deleted network={}", network_id);
  return absl::OkStatus();
}

absl::StatusOr<google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>> FleetCore::AssignNicsLocked(
    const std::string& tenant_id, const std::string& vm_id, const ppn::types::v1::VmSpec& spec) {
  google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic> out;
  for (const std::string& network_id : spec.networks()) {
    const StoredNetwork* n = networks_.Find(tenant_id, network_id);
    if (n == nullptr) return NetworkNotFound(network_id);
    std::set<std::string> used;
    for (const auto& [id, e] : registry_.vms()) {
      if (id == vm_id || e.record().state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
      for (const auto& nic : e.record().private_nics()) {
        if (nic.network_id() == network_id) used.insert(nic.address());
      }
    }
    PPN_ASSIGN_OR_RETURN(*out.Add(), networks_.Assign(*n, used));
  }
  return out;
}

void FleetCore::AddNode(const std::string& node_id, const std::string& agent_address) {
  absl::MutexLock l(&mu_);
  NodeEntry& n = registry_.UpsertNode(node_id);
  if (!n.registered()) {
    n.node.set_node_id(node_id);
    n.node.set_state(n.revoked ? ppn::fleet::v1::NODE_STATE_REVOKED : ppn::fleet::v1::NODE_STATE_JOINING);
    n.interval = options_.heartbeat_interval;
    n.joined = deps_.clock->Now();
    spdlog::info("node.added node={} agent={}", node_id, agent_address);
  }
  n.node.set_agent_address(agent_address);
  registry_.Reindex(node_id);
  registry_.Changed();
}

void FleetCore::RevokeNode(const std::string& node_id) {
  absl::MutexLock l(&mu_);
  NodeEntry* n = registry_.Node(node_id);
  if (n == nullptr) return;
  std::map<std::string, ppn::types::v1::VmState> before;
  for (const std::string& id : n->vm_ids) {
    if (VmEntry* e = registry_.Vm(id)) before[id] = registry_.VisibleState(e->record());
  }
  registry_.Revoke(node_id);
  // Its VMs are unknown from now on (the tenant may destroy them; nothing is placed there).
  for (const auto& [id, was] : before) {
    VmEntry* e = registry_.Vm(id);
    if (e != nullptr && was != registry_.VisibleState(e->record())) {
      log_.StateChanged(e->record(), was, ppn::types::v1::VM_STATE_UNKNOWN, "its node was revoked");
    }
  }
  spdlog::warn("node.revoked node={} vms={}", node_id, before.size());
  registry_.Changed();
}

std::vector<std::pair<std::string, std::string>> FleetCore::NodeAddresses() {
  absl::MutexLock l(&mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [id, n] : registry_.nodes()) {
    if (n.registered()) out.emplace_back(id, n.node.agent_address());
  }
  return out;
}

void FleetCore::QueueLocked(std::vector<NodeAction> actions) {
  for (NodeAction& a : actions) {
    if (action_keys_.insert(a.Key()).second) actions_.push_back(std::move(a));
  }
}

void FleetCore::OnHeartbeat(const ppn::host::v1::Heartbeat& hb) {
  absl::MutexLock l(&mu_);
  QueueLocked(reconciler_.ApplyHeartbeat(hb, deps_.clock->Now()));
  if (registry_.Node(hb.node_id()) == nullptr) return;
  auto& mine = tunnels_[hb.node_id()];
  bool moved = static_cast<int>(mine.size()) != hb.network_tunnels_size();  // an end came, went or changed
  std::map<std::string, ppn::host::v1::NetworkTunnel> now;
  for (const auto& t : hb.network_tunnels()) {
    auto it = mine.find(t.network_id());
    moved =
        moved || it == mine.end() || it->second.public_key() != t.public_key() || it->second.endpoint() != t.endpoint();
    now[t.network_id()] = t;
  }
  mine = std::move(now);
  if (!moved) {
    QueuePeersLocked(hb.node_id());
    return;
  }
  // The other nodes need this one's new end now, not at their next heartbeat.
  for (const auto& [node_id, _] : tunnels_) QueuePeersLocked(node_id);
}

namespace {
// FNV-1a: a stable fingerprint of a peer list (the node echoes it; nothing secret in it).
std::string Fingerprint(const ppn::host::v1::SetNetworkPeersRequest& r) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](absl::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (const auto& p : r.peers()) {
    mix(p.public_key());
    mix(p.endpoint());
    for (const auto& a : p.addresses()) mix(a);
  }
  return absl::StrFormat("%016x", h);
}
}  // namespace

ppn::host::v1::SetNetworkPeersRequest FleetCore::PeersFor(const std::string& node_id, const std::string& network_id) {
  ppn::host::v1::SetNetworkPeersRequest req;
  req.set_network_id(network_id);
  for (const auto& [other, networks] : tunnels_) {  // ordered: a stable fingerprint
    if (other == node_id) continue;
    auto it = networks.find(network_id);
    if (it == networks.end()) continue;
    auto* peer = req.add_peers();
    peer->set_public_key(it->second.public_key());
    peer->set_endpoint(it->second.endpoint());
    std::vector<std::string> addresses;
    for (const auto& [id, e] : registry_.vms()) {
      const VmRecord& r = e.record();
      if (r.node_id() != other || r.state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
      for (const auto& nic : r.private_nics()) {
        if (nic.network_id() == network_id) addresses.push_back(nic.address());
      }
    }
    std::sort(addresses.begin(), addresses.end());
    for (auto& a : addresses) peer->add_addresses(a);
  }
  req.set_fingerprint(Fingerprint(req));
  return req;
}

void FleetCore::QueuePeersLocked(const std::string& node_id) {
  for (const auto& [network_id, t] : tunnels_[node_id]) {
    ppn::host::v1::SetNetworkPeersRequest want = PeersFor(node_id, network_id);
    if (want.fingerprint() == t.peers_fingerprint()) continue;
    peer_actions_[absl::StrCat(node_id, "/", network_id)] = std::move(want);
  }
}

void FleetCore::RunPeerActions() {
  std::vector<std::tuple<std::string, std::string, ppn::host::v1::SetNetworkPeersRequest>> todo;
  {
    absl::MutexLock l(&mu_);
    for (auto& [key, req] : peer_actions_) {
      std::string node_id = key.substr(0, key.find('/'));
      NodeEntry* n = registry_.Node(node_id);
      if (n == nullptr) continue;
      todo.emplace_back(node_id, n->node.agent_address(), std::move(req));
    }
    peer_actions_.clear();
  }
  for (const auto& [node_id, address, req] : todo) {
    absl::Status s = deps_.agents->ForNode(node_id, address)->SetNetworkPeers(req);
    spdlog::info("network.peers_set node={} network={} peers={} code={}", node_id, req.network_id(), req.peers_size(),
                 absl::StatusCodeToString(s.code()));
  }
}

void FleetCore::RunOnce() {
  std::vector<std::pair<std::string, std::string>> expired;  // vm, tenant
  {
    absl::MutexLock l(&mu_);
    absl::Time now = deps_.clock->Now();
    for (auto& [id, n] : registry_.nodes()) {
      // A node configured (or joined) but never heard from counts as silent since then, so
      // its VMs show UNKNOWN (and can be destroyed at once) instead of a RUNNING no one saw.
      bool silent = (n.node.state() == ppn::fleet::v1::NODE_STATE_ALIVE && now - n.last_heartbeat > 3 * n.interval) ||
                    (n.node.state() == ppn::fleet::v1::NODE_STATE_JOINING && now - n.joined > 3 * n.interval);
      if (silent) {
        n.node.set_state(ppn::fleet::v1::NODE_STATE_UNREACHABLE);
        spdlog::warn("node.unreachable node={} silent_ms={}", id,
                     absl::ToInt64Milliseconds(now - std::max(n.joined, n.last_heartbeat)));
        reconciler_.NodeUnreachable(id);
        registry_.Reindex(id);
        registry_.Changed();
      }
    }
    for (const auto& [id, e] : registry_.vms()) {
      const VmRecord& r = e.record();
      if (r.state() == ppn::types::v1::VM_STATE_DESTROYED || r.state() == ppn::types::v1::VM_STATE_PENDING ||
          !r.has_expire_time() || !IsValidTimestamp(r.expire_time())) {
        continue;
      }
      absl::Time expire = absl::FromUnixSeconds(r.expire_time().seconds()) + absl::Nanoseconds(r.expire_time().nanos());
      if (expire <= now) expired.emplace_back(id, r.tenant_id());
    }
  }
  for (const auto& [vm, tenant] : expired) {
    absl::StatusOr<VmRecord> r = DestroyVm(Scope{tenant}, vm, Actor::Ttl());
    if (r.ok()) {
      spdlog::info("vm.expired vm={} tenant={}", vm, LogValue(tenant));
    } else {
      spdlog::warn("vm.expire_failed vm={} code={}", vm, absl::StatusCodeToString(r.status().code()));
    }
  }
  RunNodeActions();
  RunPeerActions();
}

void FleetCore::RunNodeActions() {
  std::vector<std::pair<NodeAction, std::string>> todo;  // with the node's address
  {
    absl::MutexLock l(&mu_);
    for (NodeAction& a : actions_) {
      NodeEntry* n = registry_.Node(a.node_id);
      std::string address = n == nullptr ? "" : n->node.agent_address();
      todo.emplace_back(std::move(a), address);
    }
    actions_.clear();
  }
  for (const auto& [a, address] : todo) {
    AgentClient* agent = deps_.agents->ForNode(a.node_id, address);
    absl::StatusOr<ppn::host::v1::VmInstance> result;
    if (a.kind == NodeAction::Kind::kDestroy) {
      spdlog::info("vm.node_destroy vm={} node={} reason={}", a.vm_id, a.node_id, LogValue(a.reason));
      absl::Status s = agent->DestroyVm(VmId(a.vm_id));
      result = s.ok() ? absl::StatusOr<ppn::host::v1::VmInstance>(ppn::host::v1::VmInstance()) : s;
    } else {
      spdlog::info("vm.node_resume vm={} node={} reason={}", a.vm_id, a.node_id, LogValue(a.reason));
      result = agent->ResumeVm(VmId(a.vm_id));
    }
    absl::MutexLock l(&mu_);
    reconciler_.ActionDone(a, result);
    action_keys_.erase(a.Key());
  }
}

PlacementRequest FleetCore::RequestFor(const ppn::types::v1::VmSpec& spec,
                                       const std::set<std::string>& excluded) const {
  PlacementRequest req;
  req.memory_mib = spec.memory_mib();
  req.disk_mib = DiskNeedMib(spec);
  req.image = spec.image();
  req.excluded_node_ids = excluded;
  return req;
}

Decision FleetCore::Explain(const ppn::types::v1::VmSpec& spec, const std::set<std::string>& excluded) {
  PlacementRequest req = RequestFor(spec, excluded);
  absl::MutexLock l(&mu_);
  return registry_.Place(req, /*explain=*/true);
}

std::string FleetCore::NewVmId() {
  // Time-ordered, so listing by id lists oldest first.
  uint8_t rnd[4];
  deps_.random->Fill(rnd, sizeof rnd).IgnoreError();
  uint32_t r = (uint32_t{rnd[0]} << 24) | (uint32_t{rnd[1]} << 16) | (uint32_t{rnd[2]} << 8) | rnd[3];
  return absl::StrFormat("vm-%011x%08x", absl::ToUnixMillis(deps_.clock->Now()), r);
}

void FleetCore::AbandonLocked(const std::string& vm_id) {
  registry_.Erase(vm_id).IgnoreError();  // a stale PENDING row would be settled FAILED at start
  registry_.Changed();
}

bool FleetCore::NameTakenLocked(const std::string& tenant_id, const std::string& name, const std::string& except) {
  for (const auto& [id, e] : registry_.vms()) {
    const VmRecord& r = e.record();
    if (id != except && r.tenant_id() == tenant_id && r.name() == name && !Destroyed(r)) return true;
  }
  return false;
}

absl::StatusOr<VmEntry*> FleetCore::ResolveLocked(const Scope& scope, const std::string& ref) {
  VmEntry* e = registry_.Vm(ref);
  if (e != nullptr && scope.Sees(e->record().tenant_id())) return e;
  if (ref.empty()) return VmNotFound(ref);
  // A name: a tenant has at most one VM that exists with it (CreateVm), and maybe destroyed
  // ones before it. Ids are time-ordered, so the last match is the latest.
  VmEntry* live = nullptr;
  VmEntry* latest = nullptr;
  std::set<std::string> tenants;
  for (auto& [id, v] : registry_.vms()) {
    const VmRecord& r = v.record();
    if (r.name() != ref || !scope.Sees(r.tenant_id())) continue;
    latest = &v;
    if (!Destroyed(r)) {
      live = &v;
      tenants.insert(r.tenant_id());
    }
  }
  if (tenants.size() > 1) {
    return absl::FailedPreconditionError(absl::StrCat("VMs of ", tenants.size(), " tenants are named ", ref,
                                                      "; name the tenant (tenant_id, ppnctl --tenant)"));
  }
  if (live != nullptr) return live;
  if (latest != nullptr) return latest;
  return VmNotFound(ref);
}

absl::StatusOr<CreateResult> FleetCore::CreateVm(const std::string& tenant_id, const ppn::types::v1::VmSpec& given,
                                                 const std::string& request_id, const std::string& chosen_id) {
  if (!chosen_id.empty()) PPN_RETURN_IF_ERROR(ValidateChosenVmId(chosen_id));
  ppn::types::v1::VmSpec spec = given;
  if (spec.display_name().empty()) spec.set_display_name(chosen_id);
  // Before anything is reserved or written: a bad spec leaves nothing behind.
  PPN_RETURN_IF_ERROR(ValidateVmSpec(spec));
  if (tenant_id.empty()) return absl::UnauthenticatedError("no tenant");
  if (request_id.size() > 64) return absl::InvalidArgumentError("request_id longer than 64");
  // The chosen id is part of what a request_id stands for: a retry naming another id is
  // another request.
  const std::string fingerprint =
      chosen_id.empty() ? SpecFingerprint(spec) : absl::StrCat(SpecFingerprint(spec), ":", chosen_id);
  std::string vm_id;
  std::set<std::string> tried;
  std::string errors;
  absl::StatusCode last_failure = absl::StatusCode::kUnknown;
  {
    absl::MutexLock l(&mu_);
    if (VmEntry* earlier = registry_.ByRequest(tenant_id, request_id)) {
      // A retry of a call that already created (or is creating) it. Records from before
      // fingerprints were kept cannot be told apart: they count as the same request.
      if (!earlier->stored.fingerprint.empty() && earlier->stored.fingerprint != fingerprint) {
        return absl::AlreadyExistsError(absl::StrCat("request_id ", request_id, " was used for a different VM"));
      }
      return CreateResult{registry_.View(earlier->record()), {}, /*replayed=*/true};
    }
    if (!chosen_id.empty() && NameTakenLocked(tenant_id, chosen_id, "")) {
      return absl::AlreadyExistsError(absl::StrCat("vm ", chosen_id, " already exists"));
    }
    for (const auto& [id, e] : registry_.vms()) {
      const VmRecord& r = e.record();
      if (r.tenant_id() == tenant_id && r.state() != ppn::types::v1::VM_STATE_DESTROYED &&
          r.spec().display_name() == spec.display_name()) {
        return absl::AlreadyExistsError(absl::StrCat("a VM named ", spec.display_name(), " already exists"));
      }
    }
    if (!registry_.Offered(spec.image())) {
      return absl::InvalidArgumentError(absl::StrCat("image ", spec.image(), " is not offered"));
    }
    if (size_t short_by = registry_.RelayShortfall(spec); short_by > 0) {
      return absl::ResourceExhaustedError(absl::StrCat("the relay has no port left for ", short_by,
                                                       " of the VM's port forwards; destroy a VM or ask the operator "
                                                       "for a larger --relay_ports range"));
    }
    vm_id = NewVmId();
    PPN_RETURN_IF_ERROR(AssignNicsLocked(tenant_id, vm_id, spec).status());
  }
  google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic> nics;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string node_id, address;
    Decision decision;
    {
      absl::MutexLock l(&mu_);
      decision = registry_.Place(RequestFor(spec, tried), /*explain=*/false);
      if (decision.chosen_node_id.empty()) {
        if (attempt == 0) return ShortageError(decision.shortage, decision.Explain());
        // No second candidate: the first node's failure is the answer.
        AbandonLocked(vm_id);
        return absl::Status(last_failure, errors);
      }
      node_id = decision.chosen_node_id;
      address = registry_.Node(node_id)->node.agent_address();
      StoredVm stored;
      stored.fingerprint = fingerprint;
      // A second attempt keeps the relay ports the first took (the pool may have no others).
      if (VmEntry* earlier = registry_.Vm(vm_id)) stored.relay_ports = earlier->stored.relay_ports;
      VmRecord& r = stored.record;
      r.set_vm_id(vm_id);
      r.set_tenant_id(tenant_id);
      r.set_name(chosen_id);
      r.set_node_id(node_id);
      r.set_request_id(request_id);
      *r.mutable_spec() = spec;
      r.mutable_spec()->clear_user_data();
      r.set_state(ppn::types::v1::VM_STATE_PENDING);
      // Assigned under the same lock as the record's insertion: two creates never share one.
      if (attempt == 0) {
        // Again under the lock of the insertion: two creates never take one name.
        if (!chosen_id.empty() && NameTakenLocked(tenant_id, chosen_id, vm_id)) {
          return absl::AlreadyExistsError(absl::StrCat("vm ", chosen_id, " already exists"));
        }
        absl::StatusOr<google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>> assigned =
            AssignNicsLocked(tenant_id, vm_id, spec);
        if (!assigned.ok()) return assigned.status();
        nics = *std::move(assigned);
      }
      *r.mutable_private_nics() = nics;
      absl::Time now = deps_.clock->Now();
      *r.mutable_create_time() = ToProtoTimestamp(now);
      absl::Duration ttl;
      if (spec.has_ttl() && ToAbslDuration(spec.ttl(), "spec.ttl", &ttl).ok() && ttl > absl::ZeroDuration()) {
        *r.mutable_expire_time() = ToProtoTimestamp(now + ttl);
      }
      registry_.Insert(std::move(stored)).create_in_flight = true;
      registry_.Reserve(vm_id, node_id, spec.memory_mib(), DiskNeedMib(spec));
      // Durable before the node is asked, so a crash mid-spawn leaves a record that the
      // node's next heartbeat settles (adopted or FAILED), never an orphan.
      absl::Status put = registry_.Put(vm_id);
      if (!put.ok()) {
        AbandonLocked(vm_id);
        return put;
      }
      registry_.Changed();
    }
    AgentClient* agent = deps_.agents->ForNode(node_id, address);
    absl::StatusOr<ppn::host::v1::VmInstance> spawned = agent->SpawnVm(VmId(vm_id), TenantId(tenant_id), spec, nics);
    bool fenced = false;
    if (!spawned.ok() && OutcomeUnknown(spawned.status())) {
      // The node may have started it: another node may try only once this one surely has not.
      absl::Status fence = agent->DestroyVm(VmId(vm_id));
      fenced = fence.ok() || fence.code() == absl::StatusCode::kNotFound;
      spdlog::warn("vm.spawn_unanswered vm={} node={} fenced={} fence_code={}", vm_id, node_id, fenced,
                   absl::StatusCodeToString(fence.code()));
    }
    absl::MutexLock l(&mu_);
    VmEntry* e = registry_.Vm(vm_id);
    e->create_in_flight = false;
    if (e->record().state() == ppn::types::v1::VM_STATE_DESTROYED) {
      // Destroyed by its tenant meanwhile; whatever the node has goes at its next heartbeat.
      registry_.Changed();
      return absl::AbortedError(absl::StrCat("vm ", vm_id, " was destroyed while it was being created"));
    }
    if (spawned.ok()) {
      VmRecord& r = e->record();
      TakeSpawned(*spawned, &r);
      e->settle_after = deps_.clock->Now();  // a heartbeat already on its way may predate the spawn
      PPN_RETURN_IF_ERROR(registry_.Put(vm_id));
      log_.Created(r, "spawn");
      registry_.Changed();
      spdlog::info("vm.created vm={} tenant={} node={} attempt={}", vm_id, LogValue(tenant_id), node_id, attempt + 1);
      return CreateResult{registry_.View(r), decision};
    }
    if (OutcomeUnknown(spawned.status()) && !fenced) {
      // Settled by reconciliation: the node's first heartbeat after now adopts it or fails it.
      e->settle_after = deps_.clock->Now();
      registry_.Changed();
      return absl::UnavailableError(
          absl::StrCat("node ", node_id, " did not answer the spawn of vm ", vm_id,
                       "; it stays PENDING until the node reports: ", spawned.status().message()));
    }
    registry_.Release(vm_id);
    tried.insert(node_id);
    last_failure = spawned.status().code();
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", "spawn on ", node_id, " failed: ", spawned.status().message());
    spdlog::warn("vm.spawn_failed vm={} node={} code={} error={}", vm_id, node_id,
                 absl::StatusCodeToString(spawned.status().code()), LogValue(spawned.status().message()));
    std::optional<absl::Status> definitive = Definitive(spawned.status(), spec);
    if (attempt == 1 || definitive.has_value()) {
      AbandonLocked(vm_id);
      return definitive.has_value() ? *definitive : absl::Status(spawned.status().code(), errors);
    }
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<VmRecord> FleetCore::WaitForReady(const Scope& scope, const std::string& vm_id, absl::Time deadline) {
  while (true) {
    uint64_t seen = version();
    PPN_ASSIGN_OR_RETURN(VmRecord vm, GetVm(scope, vm_id));
    switch (vm.state()) {
      case ppn::types::v1::VM_STATE_RUNNING: return vm;
      case ppn::types::v1::VM_STATE_PENDING:
      case ppn::types::v1::VM_STATE_STARTING:
      case ppn::types::v1::VM_STATE_UNKNOWN:  // its node may come back
        break;
      default:
        return absl::FailedPreconditionError(
            absl::StrCat("vm ", vm_id, " did not become ready: it is ",
                         absl::StripPrefix(ppn::types::v1::VmState_Name(vm.state()), "VM_STATE_")));
    }
    absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "vm ", vm_id, " is not ready yet (", absl::StripPrefix(ppn::types::v1::VmState_Name(vm.state()), "VM_STATE_"),
          "); it stays: follow it with WatchVm or GetVm"));
    }
    WaitForChange(seen, std::min(deadline - now, absl::Seconds(1)));
  }
}

absl::StatusOr<VmRecord> FleetCore::GetVm(const Scope& scope, const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(VmEntry * e, ResolveLocked(scope, vm_id));
  return registry_.View(e->record());
}

absl::StatusOr<ppn::fleet::v1::ListVmsResponse> FleetCore::ListVms(const Scope& scope,
                                                                   const ppn::fleet::v1::ListVmsRequest& r) {
  if (r.page_size() < 0 || r.page_size() > 1000) return absl::InvalidArgumentError("page_size must be 0-1000");
  int limit = r.page_size() == 0 ? 100 : r.page_size();
  PPN_ASSIGN_OR_RETURN(VmFilter filter, ParseVmFilter(r.filter()));
  // Bound to the caller's scope and the list's fields: a token continues only its own list.
  const std::string binding = PageTokens::Binding(scope.tenant_id.value_or(""), r);
  std::string after;
  if (!r.page_token().empty()) {
    PPN_ASSIGN_OR_RETURN(after, page_tokens_.Parse(binding, r.page_token()));
  }
  absl::MutexLock l(&mu_);
  ppn::fleet::v1::ListVmsResponse out;
  auto& vms = registry_.vms();
  auto it = after.empty() ? vms.begin() : vms.upper_bound(after);
  for (; it != vms.end(); ++it) {
    const VmRecord& rec = it->second.record();
    if (!scope.Sees(rec.tenant_id())) continue;
    VmState visible = registry_.VisibleState(rec);
    // Destroyed VMs are listed when asked for, by the flag or a filter naming their state.
    if (Destroyed(rec) && !r.include_stopped() && !(filter.state.has_value() && *filter.state == rec.state())) continue;
    if (!r.node_id().empty() && rec.node_id() != r.node_id()) continue;
    bool labels_match = true;
    for (const auto& [k, v] : r.label_selector()) {
      auto found = rec.spec().labels().find(k);
      if (found == rec.spec().labels().end() || found->second != v) labels_match = false;
    }
    if (!labels_match || !filter.Matches(rec, visible)) continue;
    if (out.vms_size() == limit) {
      out.set_next_page_token(page_tokens_.Make(binding, out.vms(out.vms_size() - 1).vm_id()));
      break;
    }
    *out.add_vms() = registry_.View(rec);
  }
  return out;
}

absl::Status FleetCore::StopLocked(VmEntry& e, const Actor& actor) {
  VmRecord& r = e.record();
  VmState prior = registry_.VisibleState(r);
  r.set_state(ppn::types::v1::VM_STATE_DESTROYED);
  r.clear_state_message();
  r.clear_forwarded_ports();
  e.settle_after = absl::InfinitePast();
  e.migrated_out_beats = 0;
  registry_.Release(r.vm_id());
  PPN_RETURN_IF_ERROR(registry_.Put(r.vm_id()));
  if (actor.who == Actor::Ttl().who) log_.Expired(r);
  log_.Destroyed(r, actor, prior, r.node_id());
  registry_.Changed();
  spdlog::info("vm.destroyed vm={} tenant={} node={} who={} prior={}", r.vm_id(), LogValue(r.tenant_id()), r.node_id(),
               actor.who, ppn::types::v1::VmState_Name(prior));
  return absl::OkStatus();
}

absl::StatusOr<VmRecord> FleetCore::DestroyVm(const Scope& scope, const std::string& ref, const Actor& actor) {
  std::string vm_id, node_id, address;
  {
    absl::MutexLock l(&mu_);
    PPN_ASSIGN_OR_RETURN(VmEntry * e, ResolveLocked(scope, ref));
    const VmRecord& r = e->record();
    vm_id = r.vm_id();
    if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) return r;
    VmState visible = registry_.VisibleState(r);
    NodeEntry* n = registry_.Node(r.node_id());
    bool runs = visible != ppn::types::v1::VM_STATE_PENDING && visible != ppn::types::v1::VM_STATE_FAILED &&
                visible != ppn::types::v1::VM_STATE_LOST && visible != ppn::types::v1::VM_STATE_UNKNOWN &&
                n != nullptr && n->registered();
    if (!runs) {
      // Nothing to wait for: the tenant stops paying for it now, and the node is told to
      // destroy it if it ever reports it (Reconciler R3).
      PPN_RETURN_IF_ERROR(StopLocked(*e, actor));
      return r;
    }
    node_id = r.node_id();
    address = n->node.agent_address();
  }
  absl::Status s = deps_.agents->ForNode(node_id, address)->DestroyVm(VmId(vm_id));
  if (!s.ok() && s.code() != absl::StatusCode::kNotFound) return s;
  absl::MutexLock l(&mu_);
  VmEntry* e = registry_.Vm(vm_id);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " not found"));
  if (e->record().state() != ppn::types::v1::VM_STATE_DESTROYED) PPN_RETURN_IF_ERROR(StopLocked(*e, actor));
  return e->record();
}

absl::StatusOr<VmRecord> FleetCore::UpdateVmNetwork(const Scope& scope, const std::string& ref,
                                                    const ppn::types::v1::EgressPolicy& egress, const Actor& actor) {
  PPN_RETURN_IF_ERROR(ValidateEgressPolicy(egress));
  std::string vm_id, node_id, address;
  {
    absl::MutexLock l(&mu_);
    PPN_ASSIGN_OR_RETURN(VmEntry * e, ResolveLocked(scope, ref));
    const VmRecord& r = e->record();
    vm_id = r.vm_id();
    if (r.state() != ppn::types::v1::VM_STATE_RUNNING) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is ", ppn::types::v1::VmState_Name(r.state()),
                                                        "; only a running VM's network can be changed"));
    }
    NodeEntry* n = registry_.Node(r.node_id());
    if (registry_.VisibleState(r) == ppn::types::v1::VM_STATE_UNKNOWN || n == nullptr || !n->registered()) {
      return absl::UnavailableError(
          absl::StrCat("node ", r.node_id(), " of vm ", vm_id, " is unreachable; its network cannot be changed now"));
    }
    if (!network_changes_.insert(vm_id).second) {
      return absl::AbortedError(absl::StrCat("another change of vm ", vm_id, "'s network is in progress; retry"));
    }
    node_id = r.node_id();
    address = n->node.agent_address();
  }
  absl::StatusOr<ppn::host::v1::VmInstance> applied =
      deps_.agents->ForNode(node_id, address)->UpdateVmNetwork(VmId(vm_id), egress);
  absl::MutexLock l(&mu_);
  network_changes_.erase(vm_id);
  if (!applied.ok()) {
    if (applied.status().code() == absl::StatusCode::kNotFound) {
      return absl::FailedPreconditionError(absl::StrCat("node ", node_id, " does not run vm ", vm_id));
    }
    return applied.status();
  }
  VmEntry* e = registry_.Vm(vm_id);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " not found"));
  VmRecord& r = e->record();
  if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " was destroyed while its network was changed"));
  }
  if (r.node_id() != node_id) {
    return absl::AbortedError(absl::StrCat("vm ", vm_id, " moved from node ", node_id, " to ", r.node_id(),
                                           " while its network was changed; retry"));
  }
  // Kept in the record, so a later start or migration of the VM uses the policy it runs with.
  *r.mutable_spec()->mutable_egress() = egress;
  PPN_RETURN_IF_ERROR(registry_.Put(vm_id));
  log_.NetworkChanged(r, actor);
  registry_.Changed();
  spdlog::info("vm.network_changed vm={} tenant={} node={} who={} internet={} allow_rules={} deny_rules={}", vm_id,
               LogValue(r.tenant_id()), node_id, actor.who,
               egress.internet() == ppn::types::v1::INTERNET_ACCESS_DENIED ? "denied" : "allowed", egress.allow_size(),
               egress.deny_size());
  return registry_.View(r);
}

absl::StatusOr<ppn::fleet::v1::Node> FleetCore::SetCordon(const std::string& node_id, bool cordoned,
                                                          const std::string& reason, const std::string& role) {
  if (reason.size() > 200) return absl::InvalidArgumentError("a cordon reason is at most 200 characters");
  for (unsigned char c : reason) {
    if (c < 0x20 || c == 0x7f) return absl::InvalidArgumentError("a cordon reason must not contain control characters");
  }
  absl::MutexLock l(&mu_);
  NodeEntry* n = registry_.Node(node_id);
  if (n == nullptr || !n->registered()) return absl::NotFoundError(absl::StrCat("node ", node_id, " not found"));
  bool changed = n->node.cordoned() != cordoned || (cordoned && n->node.cordon_reason() != reason);
  if (changed) {
    // Durable first: a cordon the fleet forgets at its next start would let VMs land there.
    PPN_RETURN_IF_ERROR(cordoned ? deps_.store->PutCordon(node_id, reason) : deps_.store->DeleteCordon(node_id));
    registry_.SetCordon(node_id, cordoned, reason);
    log_.NodeCordoned(node_id, cordoned, reason, role);
    spdlog::info("node.{} node={} role={} reason={}", cordoned ? "cordoned" : "uncordoned", node_id, role,
                 LogValue(reason));
    registry_.Changed();
  }
  return registry_.Node(node_id)->node;
}

namespace {

std::string StateWord(VmState s) {
  return std::string(absl::StripPrefix(ppn::types::v1::VmState_Name(s), "VM_STATE_"));
}

}  // namespace

absl::Status FleetCore::CallTargetLocked(const Scope& scope, const std::string& ref, std::string* node_id,
                                         std::string* address, VmRecord* record) {
  PPN_ASSIGN_OR_RETURN(VmEntry * e, ResolveLocked(scope, ref));
  const std::string& vm_id = e->record().vm_id();
  *record = registry_.View(e->record());
  NodeEntry* n = registry_.Node(e->record().node_id());
  *node_id = e->record().node_id();
  if (n == nullptr || !n->registered() || n->node.state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE) {
    return absl::UnavailableError(absl::StrCat("node ", *node_id, " of vm ", vm_id, " is unreachable; retry later"));
  }
  *address = n->node.agent_address();
  return absl::OkStatus();
}

absl::StatusOr<VmRecord> FleetCore::RecordPowerLocked(const std::string& vm_id, const std::string& node_id,
                                                      const ppn::host::v1::VmInstance& vm, absl::string_view kind,
                                                      const Actor& actor, absl::string_view how) {
  VmEntry* e = registry_.Vm(vm_id);
  if (e == nullptr) return VmNotFound(vm_id);
  VmRecord& r = e->record();
  if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " was destroyed meanwhile"));
  }
  if (r.node_id() != node_id) {
    return absl::AbortedError(absl::StrCat("vm ", vm_id, " moved to node ", r.node_id(), " meanwhile; retry"));
  }
  if (ppn::types::v1::VmState_IsValid(vm.state()) && vm.state() != ppn::types::v1::VM_STATE_UNSPECIFIED) {
    r.set_state(vm.state());
  }
  r.set_state_message(vm.state_message());
  *r.mutable_forwarded_ports() = vm.forwarded_ports();
  if (vm.has_ready_time() && IsValidTimestamp(vm.ready_time())) {
    *r.mutable_ready_time() = vm.ready_time();
    if (IsValidDuration(vm.boot_duration())) *r.mutable_boot_duration() = vm.boot_duration();
  } else {
    r.clear_ready_time();
    r.clear_boot_duration();
  }
  PPN_RETURN_IF_ERROR(registry_.Put(vm_id));
  log_.PowerChanged(kind, r, actor, how);
  registry_.Changed();
  spdlog::info("{} vm={} tenant={} node={} who={} state={}",
               kind == "vm.stop"    ? "vm.stopped"
               : kind == "vm.start" ? "vm.started"
                                    : "vm.rebooted",
               vm_id, LogValue(r.tenant_id()), node_id, actor.who, StateWord(r.state()));
  return registry_.View(r);
}

absl::StatusOr<VmRecord> FleetCore::StopVm(const Scope& scope, const std::string& ref, absl::Duration grace,
                                           const Actor& actor) {
  std::string vm_id, node_id, address;
  {
    absl::MutexLock l(&mu_);
    VmRecord r;
    absl::Status target = CallTargetLocked(scope, ref, &node_id, &address, &r);
    if (target.code() == absl::StatusCode::kNotFound) return target;
    vm_id = r.vm_id();
    if (r.state() == ppn::types::v1::VM_STATE_STOPPED) return r;
    if (r.state() != ppn::types::v1::VM_STATE_RUNNING && r.state() != ppn::types::v1::VM_STATE_STARTING &&
        r.state() != ppn::types::v1::VM_STATE_UNKNOWN) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is ", StateWord(r.state()), "; only a running VM can be stopped"));
    }
    PPN_RETURN_IF_ERROR(target);
  }
  PPN_ASSIGN_OR_RETURN(ppn::host::v1::VmInstance vm,
                       deps_.agents->ForNode(node_id, address)->StopVm(VmId(vm_id), grace));
  absl::MutexLock l(&mu_);
  return RecordPowerLocked(vm_id, node_id, vm, "vm.stop", actor, "");
}

absl::StatusOr<VmRecord> FleetCore::StartVm(const Scope& scope, const std::string& ref, const Actor& actor,
                                            bool fresh_disk) {
  std::string vm_id, node_id, address;
  {
    absl::MutexLock l(&mu_);
    VmRecord r;
    absl::Status target = CallTargetLocked(scope, ref, &node_id, &address, &r);
    if (target.code() == absl::StatusCode::kNotFound) return target;
    vm_id = r.vm_id();
    if (r.state() == ppn::types::v1::VM_STATE_RUNNING || r.state() == ppn::types::v1::VM_STATE_STARTING) return r;
    NodeEntry* n = registry_.Node(node_id);
    bool gone = r.state() == ppn::types::v1::VM_STATE_UNKNOWN || n == nullptr || !n->registered() || n->revoked ||
                n->node.state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE;
    if (gone && r.state() != ppn::types::v1::VM_STATE_STOPPED && r.state() != ppn::types::v1::VM_STATE_UNKNOWN) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is ", StateWord(r.state()), "; only a stopped VM can be started"));
    }
    if (gone && !fresh_disk) {
      // Its disk is on that node and nowhere else: booting it elsewhere is the caller's choice.
      return absl::FailedPreconditionError(absl::StrCat(
          "vm ", vm_id, " cannot start: its node ", node_id, n != nullptr && n->revoked ? " was revoked" : " is gone",
          "; its disk is there, nowhere else: start it once the node is back, destroy it, or start it with "
          "fresh_disk to boot it on another node from its image (its disk stays behind)"));
    }
    if (gone) return StartElsewhere(vm_id, actor);
    if (r.state() != ppn::types::v1::VM_STATE_STOPPED) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is ", StateWord(r.state()), "; only a stopped VM can be started"));
    }
    PPN_RETURN_IF_ERROR(target);
  }
  // Its node is alive: fresh_disk or not, it boots there with its disk.
  absl::StatusOr<ppn::host::v1::VmInstance> vm = deps_.agents->ForNode(node_id, address)->StartVm(VmId(vm_id));
  if (!vm.ok() && vm.status().code() == absl::StatusCode::kNotFound) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", vm_id, " cannot start: its node ", node_id, " no longer has its disk"));
  }
  if (!vm.ok()) return vm.status();
  absl::MutexLock l(&mu_);
  return RecordPowerLocked(vm_id, node_id, *vm, "vm.start", actor, "");
}

absl::StatusOr<VmRecord> FleetCore::StartElsewhere(const std::string& vm_id, const Actor& actor) {
  std::string from, node_id, address;
  VmRecord prior;
  ppn::types::v1::VmSpec spec;
  {
    // Entered with mu_ held by StartVm; released for the node call below.
    VmEntry* e = registry_.Vm(vm_id);
    VmRecord& r = e->record();
    from = r.node_id();
    if (!r.pinned_node_id().empty()) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is pinned to node ", r.pinned_node_id(),
                                                        "; unpin it to start it on another node"));
    }
    if (e->create_in_flight) return absl::AbortedError(absl::StrCat("vm ", vm_id, " is being started; retry"));
    spec = r.spec();
    if (!registry_.Offered(spec.image())) {
      return absl::InvalidArgumentError(absl::StrCat("image ", spec.image(), " is not offered"));
    }
    // The same placement a create gets (memory, disk, image, cordons, revoked and dead nodes,
    // reservations), never back onto the node it left.
    Decision decision = registry_.Place(RequestFor(spec, {from}), /*explain=*/false);
    if (decision.chosen_node_id.empty()) {
      Decision explained = registry_.Place(RequestFor(spec, {from}), /*explain=*/true);
      return ShortageError(explained.shortage, explained.Explain());
    }
    node_id = decision.chosen_node_id;
    address = registry_.Node(node_id)->node.agent_address();
    prior = r;
    // Durable before the node is asked: from now on the old copy must never win, even if the
    // fleet restarts mid-spawn (the new node's heartbeat then settles the PENDING record).
    r.set_node_id(node_id);
    r.set_state(ppn::types::v1::VM_STATE_PENDING);
    r.clear_state_message();
    r.clear_forwarded_ports();
    r.clear_ready_time();
    r.clear_boot_duration();
    r.clear_memory();
    if (std::find(r.left_behind_node_ids().begin(), r.left_behind_node_ids().end(), from) ==
        r.left_behind_node_ids().end()) {
      r.add_left_behind_node_ids(from);
    }
    e->create_in_flight = true;
    e->migrated_out_beats = 0;
    e->elsewhere_beats = 0;
    registry_.Reserve(vm_id, node_id, spec.memory_mib(), DiskNeedMib(spec));
    absl::Status put = registry_.Put(vm_id);
    if (!put.ok()) {
      registry_.Release(vm_id);
      e->create_in_flight = false;
      r = prior;
      registry_.Put(vm_id).IgnoreError();  // reindexes it on its old node; logged by Put
      return put;
    }
    registry_.Changed();
  }
  mu_.Unlock();
  AgentClient* agent = deps_.agents->ForNode(node_id, address);
  absl::StatusOr<ppn::host::v1::VmInstance> spawned =
      agent->SpawnVm(VmId(vm_id), TenantId(prior.tenant_id()), spec, prior.private_nics());
  bool fenced = false;
  if (!spawned.ok() && OutcomeUnknown(spawned.status())) {
    absl::Status fence = agent->DestroyVm(VmId(vm_id));
    fenced = fence.ok() || fence.code() == absl::StatusCode::kNotFound;
  }
  mu_.Lock();
  VmEntry* e = registry_.Vm(vm_id);
  e->create_in_flight = false;
  VmRecord& r = e->record();
  if (Destroyed(r)) {
    registry_.Changed();
    return absl::AbortedError(absl::StrCat("vm ", vm_id, " was destroyed while it was being started"));
  }
  if (spawned.ok()) {
    TakeSpawned(*spawned, &r);
    e->settle_after = deps_.clock->Now();  // a heartbeat already on its way may predate the spawn
    PPN_RETURN_IF_ERROR(registry_.Put(vm_id));
    log_.StartedElsewhere(r, actor, from);
    registry_.Changed();
    spdlog::info("vm.started vm={} tenant={} node={} from={} fresh_disk=true who={}", vm_id, LogValue(r.tenant_id()),
                 node_id, from, actor.who);
    return registry_.View(r);
  }
  if (OutcomeUnknown(spawned.status()) && !fenced) {
    e->settle_after = deps_.clock->Now();
    registry_.Changed();
    return absl::UnavailableError(
        absl::StrCat("node ", node_id, " did not answer the spawn of vm ", vm_id,
                     "; it stays PENDING there until the node reports: ", spawned.status().message()));
  }
  // Nothing runs on the new node: the VM is as it was (its old node still left behind only if
  // it was before).
  registry_.Release(vm_id);
  r = prior;
  e->settle_after = absl::InfinitePast();
  PPN_RETURN_IF_ERROR(registry_.Put(vm_id));
  registry_.Changed();
  spdlog::warn("vm.start_elsewhere_failed vm={} node={} code={} error={}", vm_id, node_id,
               absl::StatusCodeToString(spawned.status().code()), LogValue(spawned.status().message()));
  std::optional<absl::Status> definitive = Definitive(spawned.status(), spec);
  if (definitive.has_value()) return *definitive;
  return absl::Status(spawned.status().code(),
                      absl::StrCat("spawn on ", node_id, " failed: ", spawned.status().message()));
}

absl::StatusOr<VmRecord> FleetCore::RebootVm(const Scope& scope, const std::string& ref, absl::Duration grace,
                                             const Actor& actor, std::string* how) {
  std::string vm_id, node_id, address;
  {
    absl::MutexLock l(&mu_);
    VmRecord r;
    absl::Status target = CallTargetLocked(scope, ref, &node_id, &address, &r);
    if (target.code() == absl::StatusCode::kNotFound) return target;
    vm_id = r.vm_id();
    if (r.state() != ppn::types::v1::VM_STATE_RUNNING && r.state() != ppn::types::v1::VM_STATE_STARTING &&
        r.state() != ppn::types::v1::VM_STATE_UNKNOWN) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is ", StateWord(r.state()), "; only a running VM can be rebooted"));
    }
    PPN_RETURN_IF_ERROR(target);
  }
  PPN_ASSIGN_OR_RETURN(ppn::host::v1::VmInstance vm,
                       deps_.agents->ForNode(node_id, address)->RebootVm(VmId(vm_id), grace, how));
  absl::MutexLock l(&mu_);
  return RecordPowerLocked(vm_id, node_id, vm, "vm.reboot", actor, *how);
}

absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> FleetCore::GetConsoleOutput(const Scope& scope,
                                                                                    const std::string& ref,
                                                                                    uint64_t offset,
                                                                                    uint32_t max_bytes) {
  std::string vm_id, node_id, address;
  {
    absl::MutexLock l(&mu_);
    VmRecord r;
    absl::Status target = CallTargetLocked(scope, ref, &node_id, &address, &r);
    if (target.code() == absl::StatusCode::kNotFound) return target;
    vm_id = r.vm_id();
    // Its log went with it; and a VM not yet on a node has none.
    if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) return VmNotFound(ref);
    PPN_RETURN_IF_ERROR(target);
  }
  absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> out =
      deps_.agents->ForNode(node_id, address)->GetConsoleOutput(VmId(vm_id), offset, max_bytes);
  if (!out.ok() && out.status().code() == absl::StatusCode::kNotFound) return VmNotFound(ref);
  return out;
}

std::vector<ppn::fleet::v1::Node> FleetCore::ListNodes() {
  absl::MutexLock l(&mu_);
  return registry_.ListNodes();
}

absl::StatusOr<VmRecord> FleetCore::RecordMigration(const ppn::fleet::v1::RecordMigrationRequest& req) {
  absl::MutexLock l(&mu_);
  VmEntry* e = registry_.Vm(req.vm_id());
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("vm ", req.vm_id(), " not found"));
  VmRecord& r = e->record();
  NodeEntry* target = registry_.Node(req.target_node_id());
  if (target == nullptr || !target->registered()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown node ", req.target_node_id()));
  }
  if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", req.vm_id(), " was destroyed"));
  }
  if (r.node_id() != req.source_node_id() && r.node_id() != req.target_node_id()) {
    return absl::AbortedError(absl::StrCat("vm ", req.vm_id(), " is on ", r.node_id(), ", not ", req.source_node_id()));
  }
  // Already on the target: the target's heartbeat was applied first (Reconciler R6).
  r.set_node_id(req.target_node_id());
  // Its copy there is the VM now, not one a fresh-disk start left behind (Reconciler R0).
  auto* left = r.mutable_left_behind_node_ids();
  left->erase(std::remove(left->begin(), left->end(), req.target_node_id()), left->end());
  *r.mutable_forwarded_ports() = req.forwarded_ports();
  r.set_state(ppn::types::v1::VM_STATE_RUNNING);
  r.clear_state_message();
  e->migrated_out_beats = 0;
  e->elsewhere_beats = 0;
  PPN_RETURN_IF_ERROR(registry_.Put(req.vm_id()));
  registry_.Changed();
  spdlog::info("vm.moved vm={} from={} to={}", req.vm_id(), req.source_node_id(), req.target_node_id());
  return registry_.View(r);
}

absl::StatusOr<VmRecord> FleetCore::SetPin(const std::string& vm_id, const std::string& node_id) {
  absl::MutexLock l(&mu_);
  VmEntry* e = registry_.Vm(vm_id);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " not found"));
  VmRecord& r = e->record();
  if (!node_id.empty() && node_id != r.node_id()) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " runs on ", r.node_id(), ", not ", node_id,
                                                      "; a VM is pinned to the node it runs on"));
  }
  r.set_pinned_node_id(node_id);
  PPN_RETURN_IF_ERROR(registry_.Put(vm_id));
  registry_.Changed();
  return registry_.View(r);
}

absl::StatusOr<ppn::fleet::v1::WatchRelayRoutesResponse> FleetCore::RelayRoutes() {
  absl::MutexLock l(&mu_);
  if (!registry_.relay_enabled())
    return absl::FailedPreconditionError("the fleet has no relay (--relay_address unset)");
  ppn::fleet::v1::WatchRelayRoutesResponse table = registry_.RelayTable();
  *table.mutable_observe_time() = ToProtoTimestamp(deps_.clock->Now());
  return table;
}

uint64_t FleetCore::WaitForChange(uint64_t version, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  registry_.WaitForChange(&mu_, version, absl::Now() + timeout);
  return registry_.version();
}

uint64_t FleetCore::version() {
  absl::MutexLock l(&mu_);
  return registry_.version();
}

}  // namespace ppn::fleet
