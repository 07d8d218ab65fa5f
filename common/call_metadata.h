#pragma once

// gRPC metadata keys that services put on the calls they forward inside the mesh.

namespace ppn {

// The tenant a `tenant-proxy` peer acts for. The fleet honours it only from that role; a
// tenant can never set it (the proxy builds every forwarded call itself).
inline constexpr char kTenantMetadata[] = "x-ppn-tenant-id";

}  // namespace ppn
