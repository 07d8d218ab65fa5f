#pragma once

// Role names: the <role> segment of a certificate's SPIFFE id (spiffe://<mesh>/<role>/<name>).

#include "absl/strings/string_view.h"

namespace ppn::roles {

inline constexpr char kTenantProxy[] = "tenant-proxy";
inline constexpr char kFleet[] = "fleet";
inline constexpr char kHost[] = "host";
inline constexpr char kLedger[] = "ledger";
inline constexpr char kPairingAdmin[] = "pairing-admin";
inline constexpr char kScheduler[] = "scheduler";
inline constexpr char kOperator[] = "operator";
// The founding node's relay: follows the fleet's routes and forwards tenant endpoints.
inline constexpr char kRelay[] = "relay";

// Names no node may have: the services' certificates carry their role name (and every
// certificate `localhost`) as a DNS name, so a node named like one would let that certificate
// pass a check by name (QEMU's tls-hostname and tls-authz on a migration stream).
inline bool IsReservedNodeName(absl::string_view name) {
  for (absl::string_view reserved :
       {"localhost", kTenantProxy, kFleet, kHost, kLedger, kPairingAdmin, kScheduler, kOperator, kRelay}) {
    if (name == reserved) return true;
  }
  return false;
}

}  // namespace ppn::roles
