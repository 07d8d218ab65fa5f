#include "fleet/registry.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::VmRecord;
using ppn::types::v1::VmState;

using PortKey = std::pair<ppn::types::v1::Protocol, uint32_t>;  // effective protocol, guest port

// The forwarded ports a VM has or asked for, in the order it asked.
std::vector<PortKey> ForwardKeys(const VmRecord& r) {
  std::vector<PortKey> keys;
  auto add = [&](ppn::types::v1::Protocol protocol, uint32_t guest_port) {
    PortKey key{EffectiveProtocol(protocol), guest_port};
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
  };
  for (const auto& f : r.spec().port_forwards()) add(f.protocol(), f.guest_port());
  for (const auto& f : r.forwarded_ports()) add(f.protocol(), f.guest_port());
  return keys;
}

// A VM in these states may be serving on its node's forwarded ports (an UNKNOWN one probably
// is: only the fleet lost sight of its node). In the others its node holds no port for it, or
// may have given the port to another VM.
bool MayServe(VmState s) {
  return s == ppn::types::v1::VM_STATE_RUNNING || s == ppn::types::v1::VM_STATE_STARTING ||
         s == ppn::types::v1::VM_STATE_MIGRATING || s == ppn::types::v1::VM_STATE_STOPPING ||
         s == ppn::types::v1::VM_STATE_UNKNOWN;
}

}  // namespace

void Registry::ConfigureRelay(std::string address, uint32_t first, uint32_t last) {
  relay_address_ = std::move(address);
  relay_pool_.Configure(first, last);
}

size_t Registry::RelayShortfall(const ppn::types::v1::VmSpec& spec) const {
  if (!relay_pool_.enabled()) return 0;
  VmRecord r;
  *r.mutable_spec() = spec;
  size_t needed = ForwardKeys(r).size();
  return needed > relay_pool_.available() ? needed - relay_pool_.available() : 0;
}

absl::Status Registry::Load(absl::Time now) {
  PPN_ASSIGN_OR_RETURN(std::vector<StoredVm> stored, store_->LoadAll());
  for (StoredVm& vm : stored) {
    std::string id = vm.record.vm_id();
    VmEntry& e = Insert(std::move(vm));
    Index(id);
    if (e.record().state() == ppn::types::v1::VM_STATE_PENDING && !e.record().node_id().empty()) {
      // Its create was cut short by a restart: the node may be starting it, so keep its room
      // until the node's next heartbeat says.
      e.settle_after = now;
      Reserve(id, e.record().node_id(), e.record().spec().memory_mib(), DiskNeedMib(e.record().spec()));
    }
  }
  if (relay_pool_.enabled()) {
    // Every port already given keeps its VM (oldest first, should two claim one) before any
    // VM gets a new one; new ones continue after the newest VM's.
    uint32_t newest = 0;
    for (auto& [id, e] : vms_) {
      if (e.record().state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
      for (const RelayPort& p : e.stored.relay_ports) {
        if (relay_pool_.Claim(p.public_port, id)) newest = p.public_port;
      }
    }
    if (newest != 0) relay_pool_.ContinueAfter(newest);
    for (auto& [id, e] : vms_) {
      if (SyncRelay(e)) PPN_RETURN_IF_ERROR(store_->Put(e.stored));
    }
  }
  Changed();
  return absl::OkStatus();
}

NodeEntry* Registry::Node(const std::string& node_id) {
  auto it = nodes_.find(node_id);
  return it == nodes_.end() ? nullptr : &it->second;
}

NodeEntry& Registry::UpsertNode(const std::string& node_id) { return nodes_[node_id]; }

void Registry::SetImages(const std::string& node_id, std::vector<std::string> images) {
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  NodeEntry& n = nodes_[node_id];
  std::vector<std::string>& old = images_[node_id];
  if (old == images) return;
  catalog_nodes_ += static_cast<int>(!images.empty()) - static_cast<int>(!old.empty());
  if (!n.revoked) {
    for (const std::string& i : old) {
      if (--offered_[i] == 0) offered_.erase(i);
    }
    for (const std::string& i : images) ++offered_[i];
  }
  old = images;
  n.node.mutable_images()->Clear();
  for (const std::string& i : images) n.node.add_images(i);
}

void Registry::Revoke(const std::string& node_id) {
  NodeEntry& n = nodes_[node_id];
  if (n.revoked) return;
  n.revoked = true;
  n.node.set_state(ppn::fleet::v1::NODE_STATE_REVOKED);
  for (const std::string& i : images_[node_id]) {
    if (--offered_[i] == 0) offered_.erase(i);
  }
  Reindex(node_id);
}

void Registry::SetCordon(const std::string& node_id, bool cordoned, const std::string& reason) {
  NodeEntry& n = nodes_[node_id];
  n.node.set_cordoned(cordoned);
  n.node.set_cordon_reason(cordoned ? reason : "");
  Reindex(node_id);
}

bool Registry::Offered(const std::string& image) const {
  // No node has told its catalog (older agents): the node's spawn decides.
  return catalog_nodes_ == 0 || offered_.count(image) != 0;
}

void Registry::SetReports(const std::string& node_id, std::map<std::string, Reported> reports) {
  NodeEntry& n = nodes_[node_id];
  for (const auto& [vm_id, _] : n.reported) {
    if (reports.count(vm_id) != 0) continue;
    auto it = reporters_.find(vm_id);
    if (it == reporters_.end()) continue;
    it->second.erase(node_id);
    if (it->second.empty()) reporters_.erase(it);
  }
  for (const auto& [vm_id, _] : reports) reporters_[vm_id].insert(node_id);
  n.reported = std::move(reports);
}

std::vector<std::pair<std::string, Reported>> Registry::ReportsOf(const std::string& vm_id) const {
  std::vector<std::pair<std::string, Reported>> out;
  auto it = reporters_.find(vm_id);
  if (it == reporters_.end()) return out;
  for (const std::string& node_id : it->second) {
    const NodeEntry& n = nodes_.at(node_id);
    if (n.reporting()) out.emplace_back(node_id, n.reported.at(vm_id));
  }
  return out;
}

VmEntry* Registry::Vm(const std::string& vm_id) {
  auto it = vms_.find(vm_id);
  return it == vms_.end() ? nullptr : &it->second;
}

VmEntry* Registry::ByRequest(const std::string& tenant_id, const std::string& request_id) {
  if (request_id.empty()) return nullptr;
  auto it = by_request_.find({tenant_id, request_id});
  return it == by_request_.end() ? nullptr : Vm(it->second);
}

VmEntry& Registry::Insert(StoredVm vm) {
  std::string id = vm.record.vm_id();
  VmEntry& e = vms_[id];
  e.stored = std::move(vm);
  return e;
}

void Registry::Index(const std::string& vm_id) {
  auto it = vms_.find(vm_id);
  std::string node = it == vms_.end() ? "" : it->second.record().node_id();
  auto indexed = indexed_node_.find(vm_id);
  if (indexed != indexed_node_.end() && indexed->second != node) {
    nodes_[indexed->second].vm_ids.erase(vm_id);
    indexed_node_.erase(indexed);
  }
  if (!node.empty() && indexed_node_.emplace(vm_id, node).second) nodes_[node].vm_ids.insert(vm_id);
  if (it != vms_.end() && !it->second.record().request_id().empty()) {
    by_request_[{it->second.record().tenant_id(), it->second.record().request_id()}] = vm_id;
  }
}

bool Registry::SyncRelay(VmEntry& e) {
  VmRecord& r = e.record();
  for (auto& f : *r.mutable_forwarded_ports()) {
    f.clear_public_address();
    f.clear_public_port();
  }
  std::vector<RelayPort>& ports = e.stored.relay_ports;
  const std::vector<RelayPort> before = ports;
  if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) {
    ports.clear();
  } else if (relay_pool_.enabled()) {
    std::vector<RelayPort> kept;
    for (const RelayPort& p : ports) {
      if (relay_pool_.Claim(p.public_port, r.vm_id())) {
        kept.push_back(p);
      } else {
        spdlog::warn("relay.port_replaced vm={} port={} range={}-{}", r.vm_id(), p.public_port, relay_pool_.first(),
                     relay_pool_.last());
      }
    }
    ports = std::move(kept);
    for (const PortKey& key : ForwardKeys(r)) {
      bool has = std::any_of(ports.begin(), ports.end(),
                             [&](const RelayPort& p) { return p.protocol == key.first && p.guest_port == key.second; });
      if (has) continue;
      std::optional<uint32_t> port = relay_pool_.Allocate(r.vm_id());
      if (!port.has_value()) {
        spdlog::error("relay.ports_exhausted vm={} guest_port={} range={}-{}", r.vm_id(), key.second,
                      relay_pool_.first(), relay_pool_.last());
        continue;
      }
      ports.push_back({key.first, key.second, *port});
    }
  }
  std::set<uint32_t> held;
  for (const RelayPort& p : ports) held.insert(p.public_port);
  relay_pool_.ReleaseExcept(r.vm_id(), held);
  return ports != before;
}

absl::Status Registry::Put(const std::string& vm_id) {
  Index(vm_id);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return absl::NotFoundError(absl::StrCat("vm ", vm_id, " not found"));
  SyncRelay(it->second);
  absl::Status s = store_->Put(it->second.stored);
  if (!s.ok()) spdlog::error("vm.store_failed vm={} error={}", vm_id, LogValue(s.message()));
  return s;
}

absl::Status Registry::Erase(const std::string& vm_id) {
  auto it = vms_.find(vm_id);
  if (it != vms_.end()) {
    const VmRecord& r = it->second.record();
    if (!r.request_id().empty()) by_request_.erase({r.tenant_id(), r.request_id()});
    vms_.erase(it);
  }
  Release(vm_id);
  Index(vm_id);
  relay_pool_.ReleaseExcept(vm_id, {});
  return store_->Delete(vm_id);
}

void Registry::Reserve(const std::string& vm_id, const std::string& node_id, uint64_t memory_mib, uint64_t disk_mib) {
  Release(vm_id);
  reservations_[vm_id] = {node_id, memory_mib, disk_mib};
  NodeEntry& n = nodes_[node_id];
  n.reserved_memory_mib += memory_mib;
  n.reserved_disk_mib += disk_mib;
  Reindex(node_id);
}

void Registry::Release(const std::string& vm_id) {
  auto it = reservations_.find(vm_id);
  if (it == reservations_.end()) return;
  NodeEntry& n = nodes_[it->second.node_id];
  n.reserved_memory_mib -= std::min(n.reserved_memory_mib, it->second.memory_mib);
  n.reserved_disk_mib -= std::min(n.reserved_disk_mib, it->second.disk_mib);
  std::string node_id = it->second.node_id;
  reservations_.erase(it);
  Reindex(node_id);
}

NodeView Registry::ViewOf(const std::string& node_id, const NodeEntry& n) const {
  NodeView v;
  v.node_id = node_id;
  v.alive = n.node.state() == ppn::fleet::v1::NODE_STATE_ALIVE;
  v.revoked = n.revoked;
  v.cordoned = n.node.cordoned();
  v.available_mib = n.node.available_memory_mib();
  v.reclaimed_mib = n.node.reclaimed_memory_mib();
  v.reserved_mib = n.reserved_memory_mib;
  v.kvm = n.node.kvm();
  v.disk_known = n.node.disk_total_mib() > 0;
  v.disk_available_mib = n.node.disk_available_mib();
  v.disk_reserved_mib = n.reserved_disk_mib;
  auto images = images_.find(node_id);
  if (images != images_.end() && !images->second.empty()) {
    v.catalog_known = true;
    v.images = images->second;
  }
  return v;
}

void Registry::Reindex(const std::string& node_id) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end() || !it->second.registered()) {
    placement_.Remove(node_id);
    return;
  }
  placement_.Upsert(ViewOf(node_id, it->second));
}

Decision Registry::Place(const PlacementRequest& request, bool explain) const {
  if (!explain) {
    // The hot path: the index walks from the best node instead of scanning the fleet.
    std::string best = placement_.Best(request);
    if (!best.empty()) return fleet::Place({ViewOf(best, nodes_.at(best))}, request, /*explain=*/false);
  }
  std::vector<NodeView> views;
  for (const auto& [id, n] : nodes_) {
    if (n.registered()) views.push_back(ViewOf(id, n));
  }
  return fleet::Place(views, request, /*explain=*/true);
}

std::vector<ppn::fleet::v1::Node> Registry::ListNodes() const {
  std::vector<ppn::fleet::v1::Node> out;
  for (const auto& [id, n] : nodes_) {
    if (!n.registered()) continue;
    out.push_back(n.node);
    out.back().set_reserved_memory_mib(n.reserved_memory_mib);
  }
  return out;
}

VmState Registry::VisibleState(const VmRecord& record) const {
  auto n = nodes_.find(record.node_id());
  // A revoked node's word counts for nothing: what runs there is unknown, as on a lost node.
  if (n != nodes_.end() && (n->second.node.state() == ppn::fleet::v1::NODE_STATE_UNREACHABLE || n->second.revoked) &&
      record.state() != ppn::types::v1::VM_STATE_DESTROYED) {
    return ppn::types::v1::VM_STATE_UNKNOWN;
  }
  return record.state();
}

VmRecord Registry::View(const VmRecord& record) const {
  VmRecord view = record;
  // Its traffic as its own node last reported it (a copy elsewhere, paused or incoming, has
  // its own counters).
  auto n = nodes_.find(record.node_id());
  if (n != nodes_.end() && record.state() != ppn::types::v1::VM_STATE_DESTROYED) {
    auto reported = n->second.reported.find(record.vm_id());
    if (reported != n->second.reported.end()) {
      *view.mutable_network() = reported->second.vm.network();
      if (reported->second.vm.has_memory()) *view.mutable_memory() = reported->second.vm.memory();
    }
  }
  if (VisibleState(record) == ppn::types::v1::VM_STATE_UNKNOWN) {
    view.set_state(ppn::types::v1::VM_STATE_UNKNOWN);
    bool revoked = n != nodes_.end() && n->second.revoked;
    view.set_state_message(absl::StrCat("node ", record.node_id(), revoked ? " was revoked" : " is unreachable"));
  }
  auto e = vms_.find(record.vm_id());
  if (!relay_address_.empty() && e != vms_.end()) {
    for (auto& f : *view.mutable_forwarded_ports()) {
      for (const RelayPort& p : e->second.stored.relay_ports) {
        if (p.protocol == EffectiveProtocol(f.protocol()) && p.guest_port == f.guest_port()) {
          f.set_public_address(relay_address_);
          f.set_public_port(p.public_port);
        }
      }
    }
  }
  return view;
}

namespace {

// "10.8.0.2:7110" → "10.8.0.2"; "[::1]:7110" → "::1".
std::string HostOfAddress(const std::string& address) {
  size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host;
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

ppn::fleet::v1::WatchRelayRoutesResponse Registry::RelayTable() const {
  ppn::fleet::v1::WatchRelayRoutesResponse table;
  table.set_public_address(relay_address_);
  std::vector<ppn::fleet::v1::RelayRoute> routes;
  for (const auto& [id, e] : vms_) {
    const VmRecord& r = e.record();
    if (r.state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
    bool serving = MayServe(VisibleState(r));
    // A forward is served only at its node's own address: a record written by anyone who
    // could name another address (a heartbeat, a RecordMigration) must not turn the relay
    // into a tunnel from the internet to the founding node's loopback or the LAN.
    // (A node named by a host name rather than an address cannot be compared; it is trusted.)
    std::string node_host;
    auto node = nodes_.find(r.node_id());
    if (node != nodes_.end()) node_host = HostOfAddress(node->second.node.agent_address());
    const bool comparable = IsIpLiteral(node_host);
    for (const RelayPort& p : e.stored.relay_ports) {
      ppn::fleet::v1::RelayRoute route;
      route.set_public_port(p.public_port);
      route.set_protocol(p.protocol);
      route.set_vm_id(id);
      for (const auto& f : r.forwarded_ports()) {
        if (serving && EffectiveProtocol(f.protocol()) == p.protocol && f.guest_port() == p.guest_port &&
            !f.host_address().empty() && f.host_port() != 0 && (!comparable || f.host_address() == node_host)) {
          route.set_backend_address(f.host_address());
          route.set_backend_port(f.host_port());
        }
      }
      routes.push_back(std::move(route));
    }
  }
  std::sort(routes.begin(), routes.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.protocol(), a.public_port()) < std::make_pair(b.protocol(), b.public_port());
  });
  for (auto& route : routes) *table.add_routes() = std::move(route);
  return table;
}

void Registry::Changed() {
  ++version_;
  changed_cv_.SignalAll();
}

void Registry::WaitForChange(absl::Mutex* mu, uint64_t version, absl::Time deadline) {
  while (version_ == version) {
    if (changed_cv_.WaitWithDeadline(mu, deadline)) return;
  }
}

}  // namespace ppn::fleet
