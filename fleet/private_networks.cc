#include "fleet/private_networks.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ppn::fleet {
namespace {

std::string Dotted(uint32_t host_order) {
  in_addr a;
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 63 || !(name[0] >= 'a' && name[0] <= 'z')) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

}  // namespace

absl::Status NetworkNotFound(const std::string& network_id) {
  return absl::NotFoundError(absl::StrCat("network ", network_id.substr(0, 64), " not found"));
}

absl::StatusOr<NetworkPool> NetworkPool::Make(const std::string& pool) {
  std::vector<std::string> parts = absl::StrSplit(pool, absl::MaxSplits('/', 1));
  in_addr a;
  int prefix = 0;
  if (parts.size() != 2 || inet_pton(AF_INET, parts[0].c_str(), &a) != 1 || !absl::SimpleAtoi(parts[1], &prefix) ||
      prefix < 8 || prefix > 24) {
    return absl::InvalidArgumentError(
        absl::StrCat("--private_network_pool \"", pool.substr(0, 64), "\" must be an IPv4 CIDR of prefix 8-24"));
  }
  NetworkPool p;
  uint32_t mask = ~uint32_t{0} << (32 - prefix);
  p.base_ = ntohl(a.s_addr) & mask;
  p.count_ = uint32_t{1} << (24 - prefix);
  return p;
}

void NetworkPool::Load(std::vector<StoredNetwork> networks) {
  networks_.clear();
  high_water_ = 0;
  for (StoredNetwork& n : networks) {
    high_water_ = std::max(high_water_, n.index + 1);
    networks_[n.network_id] = std::move(n);
  }
}

absl::StatusOr<StoredNetwork> NetworkPool::Make(const std::string& tenant_id, const std::string& name,
                                                const std::string& network_id, int64_t now_unix_seconds) const {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError("name must be 1-63 characters of [a-z0-9-], starting with a letter");
  }
  std::set<uint32_t> taken;
  for (const auto& [id, n] : networks_) {
    if (n.tenant_id == tenant_id && n.name == name) {
      return absl::AlreadyExistsError(absl::StrCat("a network named ", name, " already exists"));
    }
    taken.insert(n.index);
  }
  std::optional<uint32_t> index;
  for (uint32_t i = high_water_; i < count_ && !index; ++i) {
    if (taken.count(i) == 0) index = i;
  }
  for (uint32_t i = 0; i < count_ && !index; ++i) {
    if (taken.count(i) == 0) index = i;
  }
  if (!index) {
    return absl::ResourceExhaustedError(
        "no private network is left to hand out: delete a network, or ask the operator for a larger pool");
  }
  return StoredNetwork{network_id, tenant_id, name, *index, now_unix_seconds};
}

void NetworkPool::Add(const StoredNetwork& network) {
  high_water_ = std::max(high_water_, network.index + 1);
  networks_[network.network_id] = network;
}

void NetworkPool::Remove(const std::string& network_id) { networks_.erase(network_id); }

const StoredNetwork* NetworkPool::Find(const std::string& tenant_id, const std::string& network_id) const {
  auto it = networks_.find(network_id);
  if (it == networks_.end() || (!tenant_id.empty() && it->second.tenant_id != tenant_id)) return nullptr;
  return &it->second;
}

std::vector<StoredNetwork> NetworkPool::List(const std::string& tenant_id) const {
  std::vector<StoredNetwork> out;
  for (const auto& [id, n] : networks_) {
    if (tenant_id.empty() || n.tenant_id == tenant_id) out.push_back(n);
  }
  std::sort(out.begin(), out.end(), [](const StoredNetwork& a, const StoredNetwork& b) {
    return std::tie(a.create_unix_seconds, a.network_id) < std::tie(b.create_unix_seconds, b.network_id);
  });
  return out;
}

std::string NetworkPool::Cidr(const StoredNetwork& network) const {
  return absl::StrCat(Dotted(base_ + network.index * 256), "/24");
}

ppn::types::v1::Network NetworkPool::View(const StoredNetwork& network) const {
  ppn::types::v1::Network out;
  out.set_network_id(network.network_id);
  out.set_name(network.name);
  out.set_cidr(Cidr(network));
  return out;
}

absl::StatusOr<ppn::types::v1::PrivateNic> NetworkPool::Assign(const StoredNetwork& network,
                                                               const std::set<std::string>& used) const {
  uint32_t net = base_ + network.index * 256;
  for (uint32_t host = 2; host < 255; ++host) {
    std::string address = Dotted(net + host);
    if (used.count(address) != 0) continue;
    ppn::types::v1::PrivateNic nic;
    nic.set_network_id(network.network_id);
    nic.set_address(address);
    nic.set_prefix_length(24);
    return nic;
  }
  return absl::ResourceExhaustedError(absl::StrCat("network ", network.network_id, " has no address left"));
}

}  // namespace ppn::fleet
