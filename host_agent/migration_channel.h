#pragma once

// The TCP connection a live migration travels on, authenticated before QEMU ever sees it.
// The target agent listens on its mesh address for one waiting VM; the source agent connects
// and first sends the single-use ticket the target issued in PrepareIncoming (the scheduler
// carries it over mTLS). A connection that does not send it within a few seconds is closed
// and the waiting VM never learns of it; the right one is handed to QEMU (QMP getfd), whose
// own TLS then authenticates the source node's certificate and encrypts the stream. Because
// the agents hold the sockets, QEMU needs no network of its own for a migration: it may live
// in the VM's network namespace.

#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ppn::host {

inline constexpr size_t kMigrationTicketBytes = 32;

// A fresh random ticket (OpenSSL RAND_bytes).
std::string NewMigrationTicket();

// Connects to "tcp:HOST:PORT" and sends `ticket`. Returns the connected socket (the caller
// owns it). INVALID_ARGUMENT for a malformed URI or ticket, UNAVAILABLE if it cannot connect
// within `timeout`.
absl::StatusOr<int> ConnectMigration(const std::string& uri, const std::string& ticket, absl::Duration timeout);

// IncomingGate accepts the migration connections of every waiting target on one thread and
// hands each connection that sent its target's ticket to `hand_off`, once; the listener of
// that target is closed then. Thread-safe.
class IncomingGate {
 public:
  // Called on the gate's thread with the accepted socket, which it then owns.
  using HandOff = std::function<void(const std::string& vm_id, int fd)>;
  explicit IncomingGate(HandOff hand_off, absl::Duration ticket_timeout = absl::Seconds(5));
  ~IncomingGate();
  IncomingGate(const IncomingGate&) = delete;
  IncomingGate& operator=(const IncomingGate&) = delete;

  // Listens on address:port for `vm_id`'s stream. UNAVAILABLE naming the address if it cannot
  // bind; INVALID_ARGUMENT for a ticket of the wrong size.
  absl::Status Open(const std::string& vm_id, const std::string& address, uint32_t port, const std::string& ticket);
  // Stops listening for `vm_id` and drops its connections not yet handed off.
  void Close(const std::string& vm_id);
  // Connections refused so far (no ticket, a wrong one, or too slow).
  int refused();

 private:
  struct Pending {
    std::string vm_id;
    std::string received;
    absl::Time deadline;
  };
  void Loop();
  void Wake();

  const HandOff hand_off_;
  const absl::Duration ticket_timeout_;
  int wake_read_ = -1, wake_write_ = -1;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::pair<int, std::string>> listeners_ ABSL_GUARDED_BY(mu_);  // vm → (fd, ticket)
  std::map<int, Pending> pending_ ABSL_GUARDED_BY(mu_);                                // accepted fd → state
  int refused_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace ppn::host
