#pragma once

// GuestReadiness watches one starting VM for the first sign that its guest is up
// (docs/guest-channel.md): the line `PPN-READY` on its guest channel (the virtio-serial port
// org.ppn.identity.0, QEMU's socket on the node), or its first forwarded TCP port answering
// from the node's side. It never blocks: each Poll() does what can be done now (connect,
// read, one probe step) and returns. What the guest writes is never interpreted beyond
// comparing whole lines with `PPN-READY`, and never kept beyond a bounded line buffer.
// Not thread-safe: one owner polls it. Owns its file descriptors.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"

namespace ppn::host {

class GuestReadiness {
 public:
  struct Target {
    std::string channel_socket;  // the guest channel's QEMU socket; empty: none
    std::string probe_host;      // IPv4 address of the first forwarded TCP port; empty: no probe
    uint32_t probe_port = 0;
  };
  // How often the port is tried, and how long one try may take.
  static constexpr absl::Duration kProbeInterval = absl::Seconds(1);
  static constexpr absl::Duration kProbeTimeout = absl::Milliseconds(800);
  // The longest line kept from the guest; the rest of a longer one is dropped.
  static constexpr size_t kMaxLine = 256;

  explicit GuestReadiness(Target target) : target_(std::move(target)) {}
  ~GuestReadiness();
  GuestReadiness(const GuestReadiness&) = delete;
  GuestReadiness& operator=(const GuestReadiness&) = delete;

  // Why the guest counts as ready ("the guest said PPN-READY", "port 22 answered"), or nullopt
  // while it does not yet.
  std::optional<std::string> Poll(absl::Time now);

 private:
  bool ReadChannel();  // true when a PPN-READY line arrived
  std::optional<std::string> ProbeStep(absl::Time now);
  void CloseProbe();

  const Target target_;
  int channel_fd_ = -1;
  std::string line_;            // the guest's current, incomplete line (bounded)
  bool line_overlong_ = false;  // the current line passed kMaxLine: it is ignored
  int probe_fd_ = -1;
  bool probe_connected_ = false;
  absl::Time probe_started_ = absl::InfinitePast();
  absl::Time next_probe_ = absl::InfinitePast();
};

}  // namespace ppn::host
