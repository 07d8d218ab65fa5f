#pragma once

// Forwarder is the relay's data path: for each route it listens on the relay's port (TCP, or
// a bound UDP socket) and forwards every new connection (or UDP peer) to the route's backend,
// the VM's port on the node that runs it now. Userspace, one epoll loop on one thread for
// every port and connection: memory and descriptors per connection are fixed (two sockets,
// two buffers of `buffer_bytes`), so the limits below bound everything a client can make it
// hold, and no client gets a thread.
//
// Routes change as a whole (SetRoutes, from the fleet's table). A port no longer routed is
// closed with its connections. A port whose backend changes (the VM moved) sends new
// connections to the new backend at once and closes the old ones: they lead to a copy of the
// VM that no longer runs. A port without a backend refuses connections (reset) and drops
// datagrams. A port that cannot be bound (in use) is retried every `retry_bind_after`.
//
// Limits: connections in all (TCP connections and UDP peers), per port, and per source
// address (TCP); a refused connection is reset at once. A connection is closed when idle for
// `idle_timeout` or not connected to its backend within `connect_timeout`; a UDP peer's
// session after `udp_idle_timeout`. TCP half-closes are passed on.
//
// Thread-safety: SetRoutes and Stats from any thread; RunOnce from one thread at a time (the
// one Start makes, or a test's). `*clock` must outlive it.

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "relay/route.h"

namespace ppn::relay {

struct ForwarderOptions {
  // Where the relay's ports listen: a numeric IPv4 or IPv6 address (0.0.0.0: everywhere).
  std::string bind_address = "0.0.0.0";
  int max_connections = 1024;
  int max_connections_per_port = 128;
  int max_connections_per_source = 32;
  int max_udp_sessions_per_port = 128;
  // UDP has its own budget, so datagrams (which anyone can send, from any port) cannot use up
  // the TCP connections; one client address holds at most a few sessions.
  int max_udp_sessions = 1024;
  int max_udp_sessions_per_source = 8;
  absl::Duration idle_timeout = absl::Minutes(5);
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration udp_idle_timeout = absl::Seconds(60);
  absl::Duration retry_bind_after = absl::Seconds(5);
  // Bytes buffered per direction of a TCP connection.
  size_t buffer_bytes = 16 * 1024;
};

// One port as the loop last saw it.
struct PortStats {
  Transport transport = Transport::kTcp;
  uint16_t port = 0;
  std::string vm_id;
  std::string backend;  // BackendName
  bool bound = false;
  std::string error;    // why it is not bound
  int connections = 0;  // TCP connections or UDP sessions open now
  uint64_t accepted = 0;
  uint64_t refused = 0;
};

class Forwarder {
 public:
  // INVALID_ARGUMENT for a bad bind address or limit; INTERNAL if epoll cannot be made.
  static absl::StatusOr<std::unique_ptr<Forwarder>> Create(ForwarderOptions options, Clock* clock);
  ~Forwarder();
  Forwarder(const Forwarder&) = delete;
  Forwarder& operator=(const Forwarder&) = delete;

  // Replaces the route table; the loop applies it at once (it is woken).
  void SetRoutes(std::vector<Route> routes);

  // One pass: waits up to `max_wait` for events, moves what is ready, applies a new table,
  // closes what timed out and retries ports that could not be bound.
  void RunOnce(absl::Duration max_wait);
  // Runs RunOnce on a thread of its own until Stop.
  void Start();
  void Stop();

  // Every port, by protocol and port, as of the end of the last pass.
  std::vector<PortStats> Stats();
  // Connections (and UDP sessions) open in all, as of the end of the last pass.
  int OpenConnections();

 private:
  struct Handle;
  struct Port;
  struct Conn;
  struct Session;
  struct Buffer;
  using PortKey = std::pair<Transport, uint16_t>;

  Forwarder(ForwarderOptions options, Clock* clock, int epoll_fd, int wake_fd);

  void ApplyRoutes(std::vector<Route> routes);
  void Bind(Port* port);
  void ClosePort(Port* port, const char* reason);
  void DropClients(Port* port);
  void OnAccept(Port* port);
  void Refuse(Port* port, int fd, const char* reason);
  void Pump(Conn* c);
  void OnConnected(Conn* c);
  // Closes both sockets; the client's with a reset unless the connection ended normally.
  void CloseConn(Conn* c, bool reset = true);
  void OnDatagram(Port* port);
  void OnSessionReply(Session* s);
  void CloseSession(Session* s);
  void Watch(int fd, Handle* handle, uint32_t events, uint32_t* current);
  // Timeouts and bind retries, at most every kSweepEvery; true if it ran.
  bool Sweep(absl::Time now);
  void Publish();

  const ForwarderOptions options_;
  Clock* const clock_;
  const int epoll_fd_;
  const int wake_fd_;
  std::unique_ptr<Handle> wake_handle_;

  // The loop's state: touched only by the thread in RunOnce.
  std::map<PortKey, std::unique_ptr<Port>> ports_;
  std::map<std::string, int> per_source_;      // TCP connections by source address
  std::map<std::string, int> udp_per_source_;  // UDP sessions by source address (not port)
  int open_ = 0;                               // TCP connections
  int udp_open_ = 0;                           // UDP sessions
  // Closed during the pass: kept until its end, since the pass's later events may name them.
  std::vector<std::unique_ptr<Port>> dead_ports_;
  std::vector<std::unique_ptr<Conn>> dead_conns_;
  std::vector<std::unique_ptr<Session>> dead_sessions_;
  absl::Time last_sweep_ = absl::InfinitePast();
  std::vector<char> datagram_;

  absl::Mutex mu_;
  bool routes_pending_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Route> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<PortStats> stats_ ABSL_GUARDED_BY(mu_);
  int open_published_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ppn::relay
