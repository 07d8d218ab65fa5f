#pragma once

// NetworkPool is the fleet's record of tenants' private networks: one /24 of the operator's
// pool (--private_network_pool) per network, and each attached VM's address in it (.2
// upward; .1 reserved). Pure (no I/O): FleetCore persists what it changes through VmStore and
// holds it under its own lock. Not thread-safe.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::fleet {

struct StoredNetwork {
  std::string network_id;
  std::string tenant_id;
  std::string name;
  uint32_t index = 0;  // which /24 of the pool
  int64_t create_unix_seconds = 0;
};

class NetworkPool {
 public:
  // `pool`: an IPv4 CIDR with a prefix of 8-24 ("10.214.0.0/16"). INVALID_ARGUMENT otherwise.
  static absl::StatusOr<NetworkPool> Make(const std::string& pool);
  NetworkPool() = default;  // an empty pool: CreateNetwork is RESOURCE_EXHAUSTED

  void Load(std::vector<StoredNetwork> networks);
  // A new network of `tenant_id` named `name` with id `network_id`, not yet recorded (Add).
  // INVALID_ARGUMENT for a bad name, ALREADY_EXISTS when the tenant has one of that name,
  // RESOURCE_EXHAUSTED when every /24 is taken. A freed /24 is handed out again only once
  // the pool has no never-used one left.
  absl::StatusOr<StoredNetwork> Make(const std::string& tenant_id, const std::string& name,
                                     const std::string& network_id, int64_t now_unix_seconds) const;
  void Add(const StoredNetwork& network);
  void Remove(const std::string& network_id);
  // The network if it exists and is `tenant_id`'s (any tenant's when empty); nullptr else.
  const StoredNetwork* Find(const std::string& tenant_id, const std::string& network_id) const;
  // `tenant_id`'s networks (everyone's when empty), oldest first.
  std::vector<StoredNetwork> List(const std::string& tenant_id) const;

  std::string Cidr(const StoredNetwork& network) const;
  ppn::types::v1::Network View(const StoredNetwork& network) const;
  // The lowest address of `network` not in `used` (.2 upward), as a NIC without a MAC.
  // RESOURCE_EXHAUSTED when all 253 are taken.
  absl::StatusOr<ppn::types::v1::PrivateNic> Assign(const StoredNetwork& network,
                                                    const std::set<std::string>& used) const;

 private:
  uint32_t base_ = 0;  // host order
  uint32_t count_ = 0;
  std::map<std::string, StoredNetwork> networks_;
  uint32_t high_water_ = 0;  // every index below it has been handed out at some time
};

// "network X not found": the same words for one that never existed and another tenant's.
absl::Status NetworkNotFound(const std::string& network_id);

}  // namespace ppn::fleet
