#pragma once

// GuestReadiness watches one starting VM for the first sign that its guest is up
// (docs/guest-channel.md): the line `PPN-READY` on its guest channel (the virtio-serial port
// org.ppn.identity.0, QEMU's socket on the node), its first forwarded TCP port answering
// from the node's side, or the operator's console marker for its image appearing in its serial
// console log. It never blocks: each Poll() does what can be done now (connect,
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
    std::string console_log;     // the VM's serial console log; empty: not watched
    std::string console_marker;  // the image's ready_marker; empty: not watched
  };
  // How often the port is tried, and how long one try may take.
  static constexpr absl::Duration kProbeInterval = absl::Seconds(1);
  static constexpr absl::Duration kProbeTimeout = absl::Milliseconds(800);
  // The longest line kept from the guest; the rest of a longer one is dropped.
  static constexpr size_t kMaxLine = 256;
  // The most console log read per poll.
  static constexpr size_t kConsoleChunk = 64 * 1024;

  // The console log is watched from its size now: QEMU appends to it, so what earlier boots of
  // the VM printed is never taken for this boot's marker.
  explicit GuestReadiness(Target target);
  ~GuestReadiness();
  GuestReadiness(const GuestReadiness&) = delete;
  GuestReadiness& operator=(const GuestReadiness&) = delete;

  // Why the guest counts as ready ("the guest said PPN-READY", "port 22 answered"), or nullopt
  // while it does not yet.
  std::optional<std::string> Poll(absl::Time now);

 private:
  bool ReadChannel();  // true when a PPN-READY line arrived
  bool ReadConsole();  // true when the console marker appeared since the watch began
  std::optional<std::string> ProbeStep(absl::Time now);
  void CloseProbe();

  const Target target_;
  int channel_fd_ = -1;
  std::string line_;             // the guest's current, incomplete line (bounded)
  bool line_overlong_ = false;   // the current line passed kMaxLine: it is ignored
  uint64_t console_offset_ = 0;  // how far the console log was read
  std::string console_tail_;     // the last marker-length-1 bytes read, for a marker split across reads
  int probe_fd_ = -1;
  bool probe_connected_ = false;
  absl::Time probe_started_ = absl::InfinitePast();
  absl::Time next_probe_ = absl::InfinitePast();
};

}  // namespace ppn::host
