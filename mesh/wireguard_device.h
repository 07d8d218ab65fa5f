#pragma once

// WireGuardDevice is the node's WireGuard interface, driven entirely through `ip` and `wg`
// run by an injected CommandRunner (in the node's network namespace or a named one, so tests
// can give each device a namespace of its own). The backend is the kernel's wireguard when a
// probe (`ip link add <scratch> type wireguard`) works, else Debian's wireguard-go, which
// daemonizes: its process outlives the agent, as QEMU does, and a restarted agent adopts the
// interface it finds instead of cutting the tunnel.
//
// The private key stays in its file (0600): `wg set ... private-key FILE` reads it, it never
// appears in argv, a log or an error. `wg show dump` prints it; the parser drops it at once.
//
// wireguard-go's control socket is /var/run/wireguard/<name>.sock, shared by every network
// namespace of the machine: two interfaces of the same name in different namespaces of one
// machine collide (Up says so). Thread-safe: it holds no state besides its options.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/command_runner.h"
#include "mesh/device.h"

namespace ppn::mesh {

enum class Backend {
  kAuto,       // the kernel's when the probe works, else wireguard-go
  kKernel,     // the kernel's or an error
  kUserspace,  // wireguard-go
};

struct WireGuardDeviceOptions {
  std::string interface_name = "ppn-wg";  // 1-15 of [A-Za-z0-9_=+.-]
  std::string netns;                      // "" for the node's own namespace
  std::string private_key_file;           // SECRET content; mode 0600
  uint16_t listen_port = 51820;
  std::string address;     // this node's mesh address, e.g. "10.8.0.2"
  int prefix_length = 24;  // of the mesh: the route to every peer goes through the interface
  Backend backend = Backend::kAuto;
  std::string wireguard_go = "wireguard-go";    // program name (searched in PATH) or path
  std::string tun_path = "/dev/net/tun";        // what wireguard-go opens
  std::string probe_interface = "ppn-wgprobe";  // scratch name for the kernel probe
};

// What the userspace backend needs from the node, gathered by GatherUserspaceFacts and
// judged by CheckUserspacePrerequisites (pure, so every message is unit-tested).
struct UserspaceFacts {
  bool tun_present = false;  // tun_path is a character device
  bool net_admin = false;    // CAP_NET_ADMIN in the effective set
  uint32_t euid = 0;
  bool wireguard_go_found = false;
};
UserspaceFacts GatherUserspaceFacts(const WireGuardDeviceOptions& options);
// FAILED_PRECONDITION naming what is missing: the tun device, root (CAP_NET_ADMIN), or the
// wireguard-go program (and the package that provides it).
absl::Status CheckUserspacePrerequisites(const UserspaceFacts& facts, const WireGuardDeviceOptions& options);
// Whether /proc/<pid>/status text grants CAP_NET_ADMIN (CapEff bit 12).
bool StatusHasNetAdmin(absl::string_view proc_status);

// Parses `wg show <if> dump`. The first line's private key and every preshared key are
// dropped; errors never quote the text. INTERNAL for a line of the wrong shape.
absl::StatusOr<DeviceState> ParseWgDump(absl::string_view dump);

// The argv of one `wg set` applying `updates` to `interface_name`; INVALID_ARGUMENT for a bad
// key, endpoint, CIDR or keepalive.
absl::StatusOr<std::vector<std::string>> WgSetArgs(const std::string& interface_name,
                                                   const std::vector<PeerUpdate>& updates);

class WireGuardDevice final : public Device {
 public:
  // INVALID_ARGUMENT for a bad interface name, address, prefix or port.
  static absl::StatusOr<std::unique_ptr<WireGuardDevice>> Create(WireGuardDeviceOptions options, CommandRunner runner);

  const std::string& name() const override { return options_.interface_name; }

  // Makes the interface exist with the key of the key file, the listen port, the mesh address
  // and prefix (which routes the mesh through it), and link up. An interface of that name left
  // by a previous run is adopted as it is, peers and all, when its key and port match (only its
  // address and link state are corrected); otherwise it is removed and made again. The key
  // file is checked first: NOT_FOUND, FAILED_PRECONDITION (mode) or INVALID_ARGUMENT (not a
  // key). FAILED_PRECONDITION when wireguard-go is needed and cannot run (no tun device, not
  // root, not installed), when the kernel backend is forced and missing, or when the name is
  // taken by a wireguard-go of another namespace. Anything else that fails after the interface
  // was created removes it again.
  absl::StatusOr<UpResult> Up() override;
  absl::Status Down() override;
  absl::Status UpdatePeers(const std::vector<PeerUpdate>& updates) override;
  absl::Status EnableForwarding() override;
  absl::StatusOr<DeviceState> State() override;

 private:
  struct Link {
    bool up = false;
    std::string kind;  // "wireguard" (kernel), "tun" (wireguard-go) or another
  };
  WireGuardDevice(WireGuardDeviceOptions options, CommandRunner runner)
      : options_(std::move(options)), runner_(std::move(runner)) {}
  absl::StatusOr<std::string> Run(const std::vector<std::string>& argv) const;
  absl::StatusOr<std::optional<Link>> FindLink() const;
  absl::StatusOr<DeviceState> Dump() const;
  bool KernelProbe() const;
  absl::Status Create(bool kernel) const;
  absl::Status Configure() const;
  absl::Status EnsureAddressAndUp() const;

  const WireGuardDeviceOptions options_;
  const CommandRunner runner_;
};

}  // namespace ppn::mesh
