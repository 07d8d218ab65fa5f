#pragma once

// Role names: the <role> segment of a certificate's SPIFFE id (spiffe://<mesh>/<role>/<name>).

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

}  // namespace ppn::roles
