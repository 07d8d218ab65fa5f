#include "relay/forwarder.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace ppn::relay {
namespace {

constexpr int kMaxEvents = 256;
// Per event, so that one busy port cannot starve the others.
constexpr int kAcceptsPerEvent = 64;
constexpr int kDatagramsPerEvent = 64;
constexpr size_t kMaxDatagram = 65535;
// Timeouts and bind retries are checked this often (by the injected clock).
constexpr absl::Duration kSweepEvery = absl::Milliseconds(50);
// After running out of descriptors, a port stops accepting this long instead of spinning.
constexpr absl::Duration kAcceptPause = absl::Milliseconds(100);
// Refusals of one port are logged at most this often (a flood must not flood the log).
constexpr absl::Duration kRefusalLogEvery = absl::Seconds(10);

struct Address {
  sockaddr_storage storage{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

bool ToAddress(const std::string& host, uint16_t port, Address* out) {
  *out = Address();
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out->storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out->len = sizeof(sockaddr_in);
    return true;
  }
  *out = Address();
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->storage);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out->len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// The address part of a peer, for the per-source limit.
std::string HostOf(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&a)->sin_addr, buf, sizeof buf);
  } else if (a.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

std::string ErrnoText(int e) {
  char buf[128];
  return strerror_r(e, buf, sizeof buf);  // the GNU variant: returns the text
}

bool WouldBlock(int e) { return e == EAGAIN || e == EWOULDBLOCK || e == EINTR; }

void NoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Closes a TCP socket with a reset: the peer learns at once, and nothing lingers here.
void Reset(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

}  // namespace

// What an epoll event points at.
struct Forwarder::Handle {
  enum class Kind { kWake, kListener, kUdpPort, kClient, kBackend, kSession };
  Kind kind = Kind::kWake;
  void* owner = nullptr;
};

// Bytes read from one side and not yet written to the other.
struct Forwarder::Buffer {
  explicit Buffer(size_t capacity) : data(new char[capacity]), cap(capacity) {}
  size_t size() const { return tail - head; }
  bool has_room() const { return size() < cap; }
  // Where to read to and how much fits, moving what is pending to the front if that makes room.
  char* Room(size_t* n) {
    if (tail == cap && head > 0) {
      memmove(data.get(), data.get() + head, size());
      tail -= head;
      head = 0;
    }
    *n = cap - tail;
    return data.get() + tail;
  }
  void Consume(size_t n) {
    head += n;
    if (head == tail) head = tail = 0;
  }
  std::unique_ptr<char[]> data;
  size_t cap;
  size_t head = 0;
  size_t tail = 0;
};

struct Forwarder::Port {
  PortKey key;
  Route route;
  Address backend;  // valid when route.has_backend()
  int fd = -1;      // the listening (TCP) or bound (UDP) socket; -1 while not bound
  Handle handle;
  uint32_t events = 0;
  std::string error;
  absl::Time retry_at = absl::InfinitePast();  // bind again, or accept again after a pause
  std::map<Conn*, std::unique_ptr<Conn>> conns;
  std::map<std::string, std::unique_ptr<Session>> sessions;  // by the peer's sockaddr bytes
  uint64_t accepted = 0;
  uint64_t refused = 0;
  uint64_t refused_unlogged = 0;
  absl::Time refusal_logged = absl::InfinitePast();
};

// One TCP connection: a client of the relay's port and the relay's connection to the backend.
struct Forwarder::Conn {
  explicit Conn(size_t buffer_bytes) : up(buffer_bytes), down(buffer_bytes) {}
  Port* port = nullptr;
  std::string source;
  int client = -1;
  int backend = -1;
  Handle client_handle;
  Handle backend_handle;
  uint32_t client_events = 0;
  uint32_t backend_events = 0;
  bool connecting = true;
  Buffer up;    // client -> backend
  Buffer down;  // backend -> client
  bool client_eof = false;
  bool backend_eof = false;
  bool up_shut = false;    // the backend was told the client is done sending
  bool down_shut = false;  // the client was told the backend is done sending
  bool closed = false;
  absl::Time started;
  absl::Time last_active;
};

// One UDP peer of a relay port and the socket connected to the backend for it.
struct Forwarder::Session {
  Port* port = nullptr;
  Address peer;
  std::string key;
  std::string source;  // the peer's address without its port
  int fd = -1;
  Handle handle;
  uint32_t events = 0;
  bool closed = false;
  absl::Time last_active;
};

absl::StatusOr<std::unique_ptr<Forwarder>> Forwarder::Create(ForwarderOptions options, Clock* clock) {
  Address probe;
  if (!ToAddress(options.bind_address, 0, &probe)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bind address \"", options.bind_address, "\" is not a numeric IPv4 or IPv6 address"));
  }
  if (options.max_connections < 1 || options.max_connections_per_port < 1 || options.max_connections_per_source < 1 ||
      options.max_udp_sessions_per_port < 1 || options.max_udp_sessions < 1 ||
      options.max_udp_sessions_per_source < 1) {
    return absl::InvalidArgumentError("connection and session limits must be at least 1");
  }
  if (options.buffer_bytes < 1024 || options.buffer_bytes > (16 << 20)) {
    return absl::InvalidArgumentError("the buffer must be 1 KiB to 16 MiB");
  }
  for (absl::Duration d : {options.idle_timeout, options.connect_timeout, options.udp_idle_timeout}) {
    if (d <= absl::ZeroDuration()) return absl::InvalidArgumentError("timeouts must be positive");
  }
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return absl::InternalError(absl::StrCat("epoll_create1: ", ErrnoText(errno)));
  int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    int e = errno;
    close(epoll_fd);
    return absl::InternalError(absl::StrCat("eventfd: ", ErrnoText(e)));
  }
  std::unique_ptr<Forwarder> f(new Forwarder(std::move(options), clock, epoll_fd, wake_fd));
  uint32_t events = 0;
  f->Watch(wake_fd, f->wake_handle_.get(), EPOLLIN, &events);
  return f;
}

Forwarder::Forwarder(ForwarderOptions options, Clock* clock, int epoll_fd, int wake_fd)
    : options_(std::move(options)),
      clock_(clock),
      epoll_fd_(epoll_fd),
      wake_fd_(wake_fd),
      wake_handle_(std::make_unique<Handle>()),
      datagram_(kMaxDatagram) {}

Forwarder::~Forwarder() {
  Stop();
  for (auto& [key, port] : ports_) ClosePort(port.get(), "relay stopping");
  close(wake_fd_);
  close(epoll_fd_);
}

void Forwarder::SetRoutes(std::vector<Route> routes) {
  {
    absl::MutexLock l(&mu_);
    pending_ = std::move(routes);
    routes_pending_ = true;
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
    // The counter is full (it cannot be: every pass reads it); the next pass applies the table.
  }
}

void Forwarder::Start() {
  thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock l(&mu_);
        if (stopping_) return;
      }
      RunOnce(absl::Milliseconds(100));
    }
  });
}

void Forwarder::Stop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
    // As in SetRoutes: the loop wakes within its timeout anyway.
  }
  if (thread_.joinable()) thread_.join();
}

std::vector<PortStats> Forwarder::Stats() {
  absl::MutexLock l(&mu_);
  return stats_;
}

int Forwarder::OpenConnections() {
  absl::MutexLock l(&mu_);
  return open_published_;
}

void Forwarder::Watch(int fd, Handle* handle, uint32_t events, uint32_t* current) {
  if (events == *current) return;
  // An fd with nothing to wait for is taken out: epoll reports a hang-up even to an empty
  // mask, which would spin the loop while the other side's buffer drains.
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handle;
  int op = events == 0 ? EPOLL_CTL_DEL : *current == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(epoll_fd_, op, fd, &ev) != 0) {
    spdlog::error("relay.epoll_failed fd={} error={}", fd, ErrnoText(errno));  // our bug
  }
  *current = events;
}

void Forwarder::RunOnce(absl::Duration max_wait) {
  epoll_event events[kMaxEvents];
  int64_t ms = std::clamp<int64_t>(absl::ToInt64Milliseconds(max_wait), 0, INT_MAX);
  int n = epoll_wait(epoll_fd_, events, kMaxEvents, static_cast<int>(ms));
  for (int i = 0; i < n; ++i) {
    auto* h = static_cast<Handle*>(events[i].data.ptr);
    switch (h->kind) {
      case Handle::Kind::kWake: {
        uint64_t count;
        if (read(wake_fd_, &count, sizeof count) < 0) {
          // Already drained by an earlier event of this pass.
        }
        break;
      }
      case Handle::Kind::kListener: {
        auto* port = static_cast<Port*>(h->owner);
        if (port->fd >= 0) OnAccept(port);
        break;
      }
      case Handle::Kind::kUdpPort: {
        auto* port = static_cast<Port*>(h->owner);
        if (port->fd >= 0) OnDatagram(port);
        break;
      }
      case Handle::Kind::kClient:
      case Handle::Kind::kBackend: {
        auto* c = static_cast<Conn*>(h->owner);
        if (c->closed) break;
        if (h->kind == Handle::Kind::kBackend && c->connecting) {
          OnConnected(c);
        } else {
          Pump(c);
        }
        break;
      }
      case Handle::Kind::kSession: {
        auto* s = static_cast<Session*>(h->owner);
        if (!s->closed) OnSessionReply(s);
        break;
      }
    }
  }
  std::vector<Route> routes;
  bool apply = false;
  {
    absl::MutexLock l(&mu_);
    if (routes_pending_) {
      routes = std::move(pending_);
      pending_.clear();
      routes_pending_ = false;
      apply = true;
    }
  }
  if (apply) ApplyRoutes(std::move(routes));
  bool swept = Sweep(clock_->Now());
  dead_conns_.clear();
  dead_sessions_.clear();
  dead_ports_.clear();
  if (n > 0 || apply || swept) Publish();
}

void Forwarder::ApplyRoutes(std::vector<Route> routes) {
  std::map<PortKey, Route> next;
  for (Route& r : routes) next[{r.transport, r.public_port}] = std::move(r);
  for (auto it = ports_.begin(); it != ports_.end();) {
    auto wanted = next.find(it->first);
    Port* p = it->second.get();
    if (wanted == next.end()) {
      ClosePort(p, "its VM is gone");
      dead_ports_.push_back(std::move(it->second));
      it = ports_.erase(it);
      continue;
    }
    if (wanted->second != p->route) {
      // The VM moved (or the port is another VM's now): what is open leads to the old place.
      size_t dropped = p->conns.size() + p->sessions.size();
      DropClients(p);
      spdlog::info("relay.repointed port={} vm={} from={} to={} dropped={}",
                   PortName(it->first.first, it->first.second), wanted->second.vm_id, BackendName(p->route),
                   BackendName(wanted->second), dropped);
      p->route = wanted->second;
      if (p->route.has_backend()) ToAddress(p->route.backend_host, p->route.backend_port, &p->backend);
    }
    next.erase(wanted);
    ++it;
  }
  for (auto& [key, route] : next) {
    auto p = std::make_unique<Port>();
    p->key = key;
    p->route = route;
    if (route.has_backend()) ToAddress(route.backend_host, route.backend_port, &p->backend);
    p->handle.kind = key.first == Transport::kTcp ? Handle::Kind::kListener : Handle::Kind::kUdpPort;
    p->handle.owner = p.get();
    Bind(p.get());
    if (p->fd >= 0) {
      spdlog::info("relay.opened port={} vm={} backend={}", PortName(key.first, key.second), route.vm_id,
                   BackendName(route));
    }
    ports_[key] = std::move(p);
  }
}

void Forwarder::Bind(Port* p) {
  Address a;
  ToAddress(options_.bind_address, p->key.second, &a);
  bool tcp = p->key.first == Transport::kTcp;
  std::string error;
  int fd = socket(a.storage.ss_family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = absl::StrCat("socket: ", ErrnoText(errno));
  } else {
    int one = 1;
    // A restarted relay rebinds while its old connections sit in TIME_WAIT.
    if (tcp) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a.get(), a.len) != 0) {
      error = absl::StrCat("bind ", options_.bind_address, ":", p->key.second, ": ", ErrnoText(errno));
    } else if (tcp && listen(fd, SOMAXCONN) != 0) {
      error = absl::StrCat("listen: ", ErrnoText(errno));
    }
  }
  if (!error.empty()) {
    if (fd >= 0) close(fd);
    if (error != p->error) {
      spdlog::warn("relay.bind_failed port={} vm={} error={} retry_s={}", PortName(p->key.first, p->key.second),
                   p->route.vm_id, error, absl::ToInt64Seconds(options_.retry_bind_after));
    }
    p->error = error;
    p->retry_at = clock_->Now() + options_.retry_bind_after;
    return;
  }
  if (!p->error.empty()) {
    spdlog::info("relay.opened port={} vm={} backend={} after={}", PortName(p->key.first, p->key.second),
                 p->route.vm_id, BackendName(p->route), p->error);
  }
  p->error.clear();
  p->fd = fd;
  p->events = 0;
  Watch(fd, &p->handle, EPOLLIN, &p->events);
}

void Forwarder::ClosePort(Port* p, const char* reason) {
  DropClients(p);
  if (p->fd >= 0) {
    close(p->fd);  // which also takes it out of the epoll set
    spdlog::info("relay.closed port={} vm={} reason=\"{}\"", PortName(p->key.first, p->key.second), p->route.vm_id,
                 reason);
  }
  p->fd = -1;
  p->events = 0;
}

void Forwarder::DropClients(Port* p) {
  std::vector<Conn*> conns;
  for (auto& [c, _] : p->conns) conns.push_back(c);
  for (Conn* c : conns) CloseConn(c);
  std::vector<Session*> sessions;
  for (auto& [_, s] : p->sessions) sessions.push_back(s.get());
  for (Session* s : sessions) CloseSession(s);
}

void Forwarder::Refuse(Port* p, int fd, const char* reason) {
  Reset(fd);
  ++p->refused;
  ++p->refused_unlogged;
  absl::Time now = clock_->Now();
  if (now - p->refusal_logged >= kRefusalLogEvery) {
    spdlog::warn("relay.refused port={} vm={} reason=\"{}\" count={}", PortName(p->key.first, p->key.second),
                 p->route.vm_id, reason, p->refused_unlogged);
    p->refusal_logged = now;
    p->refused_unlogged = 0;
  }
}

void Forwarder::OnAccept(Port* p) {
  for (int i = 0; i < kAcceptsPerEvent; ++i) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int fd = accept4(p->fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == EINTR || e == ECONNABORTED) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) return;
      // Out of descriptors or memory: stop listening a moment instead of spinning on it.
      spdlog::error("relay.accept_failed port={} error={}", PortName(p->key.first, p->key.second), ErrnoText(e));
      Watch(p->fd, &p->handle, 0, &p->events);
      p->retry_at = clock_->Now() + kAcceptPause;
      return;
    }
    std::string source = HostOf(peer);
    if (!p->route.has_backend()) {
      Refuse(p, fd, "nothing serves the VM's port now");
      continue;
    }
    if (open_ >= options_.max_connections) {
      Refuse(p, fd, "the relay's connection limit is reached");
      continue;
    }
    if (static_cast<int>(p->conns.size()) >= options_.max_connections_per_port) {
      Refuse(p, fd, "the port's connection limit is reached");
      continue;
    }
    auto per_source = per_source_.find(source);
    if (per_source != per_source_.end() && per_source->second >= options_.max_connections_per_source) {
      Refuse(p, fd, "the source's connection limit is reached");
      continue;
    }
    int backend = socket(p->backend.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (backend < 0) {
      Refuse(p, fd, "no socket for the backend");
      continue;
    }
    ++p->accepted;
    NoDelay(fd);
    NoDelay(backend);
    auto owned = std::make_unique<Conn>(options_.buffer_bytes);
    Conn* c = owned.get();
    c->port = p;
    c->source = source;
    c->client = fd;
    c->backend = backend;
    c->client_handle = {Handle::Kind::kClient, c};
    c->backend_handle = {Handle::Kind::kBackend, c};
    c->started = c->last_active = clock_->Now();
    p->conns[c] = std::move(owned);
    ++open_;
    ++per_source_[source];
    if (connect(backend, p->backend.get(), p->backend.len) == 0) {
      OnConnected(c);
    } else if (errno == EINPROGRESS) {
      Watch(backend, &c->backend_handle, EPOLLOUT, &c->backend_events);
    } else {
      CloseConn(c);
    }
  }
}

void Forwarder::OnConnected(Conn* c) {
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(c->backend, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error != 0) {
    spdlog::debug("relay.backend_failed port={} backend={} error={}", PortName(c->port->key.first, c->port->key.second),
                  BackendName(c->port->route), ErrnoText(error));
    CloseConn(c);
    return;
  }
  c->connecting = false;
  Pump(c);
}

void Forwarder::Pump(Conn* c) {
  // Read before any byte moves: a client that saw our bytes may act (or a test may move its
  // clock) before this pass ends, and that must not count as this connection's activity.
  const absl::Time now = clock_->Now();
  bool active = false;
  // One read and one write each way per event: level-triggered epoll calls again for the rest,
  // and the other connections get their turn meanwhile.
  auto transfer = [&](int from, int to, Buffer& buf, bool& eof, bool& shut) -> bool {
    if (!eof && buf.has_room()) {
      size_t room;
      char* at = buf.Room(&room);
      ssize_t n = recv(from, at, room, 0);
      if (n > 0) {
        buf.tail += static_cast<size_t>(n);
        active = true;
      } else if (n == 0) {
        eof = true;
      } else if (!WouldBlock(errno)) {
        return false;
      }
    }
    if (buf.size() > 0) {
      ssize_t n = send(to, buf.data.get() + buf.head, buf.size(), MSG_NOSIGNAL);
      if (n > 0) {
        buf.Consume(static_cast<size_t>(n));
        active = true;
      } else if (n < 0 && !WouldBlock(errno)) {
        return false;
      }
    }
    if (eof && buf.size() == 0 && !shut) {
      shutdown(to, SHUT_WR);  // a half-close is passed on
      shut = true;
    }
    return true;
  };
  if (!transfer(c->client, c->backend, c->up, c->client_eof, c->up_shut) ||
      !transfer(c->backend, c->client, c->down, c->backend_eof, c->down_shut)) {
    CloseConn(c);
    return;
  }
  if (c->up_shut && c->down_shut) {
    CloseConn(c, /*reset=*/false);
    return;
  }
  if (active) c->last_active = now;
  uint32_t client = 0, backend = 0;
  if (!c->client_eof && c->up.has_room()) client |= EPOLLIN;
  if (c->down.size() > 0) client |= EPOLLOUT;
  if (!c->backend_eof && c->down.has_room()) backend |= EPOLLIN;
  if (c->up.size() > 0) backend |= EPOLLOUT;
  Watch(c->client, &c->client_handle, client, &c->client_events);
  Watch(c->backend, &c->backend_handle, backend, &c->backend_events);
}

void Forwarder::CloseConn(Conn* c, bool reset) {
  if (c->closed) return;
  c->closed = true;
  if (reset) {
    Reset(c->client);
  } else {
    close(c->client);
  }
  close(c->backend);
  --open_;
  auto source = per_source_.find(c->source);
  if (source != per_source_.end() && --source->second <= 0) per_source_.erase(source);
  auto it = c->port->conns.find(c);
  dead_conns_.push_back(std::move(it->second));
  c->port->conns.erase(it);
}

void Forwarder::OnDatagram(Port* p) {
  absl::Time now = clock_->Now();
  for (int i = 0; i < kDatagramsPerEvent; ++i) {
    Address peer;
    peer.len = sizeof peer.storage;
    ssize_t n =
        recvfrom(p->fd, datagram_.data(), datagram_.size(), 0, reinterpret_cast<sockaddr*>(&peer.storage), &peer.len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (!p->route.has_backend()) {
      ++p->refused;
      continue;
    }
    std::string key(reinterpret_cast<const char*>(&peer.storage), peer.len);
    auto it = p->sessions.find(key);
    Session* s;
    if (it != p->sessions.end()) {
      s = it->second.get();
    } else {
      std::string source = HostOf(peer.storage);
      auto per_source = udp_per_source_.find(source);
      if (static_cast<int>(p->sessions.size()) >= options_.max_udp_sessions_per_port ||
          udp_open_ >= options_.max_udp_sessions ||
          (per_source != udp_per_source_.end() && per_source->second >= options_.max_udp_sessions_per_source)) {
        ++p->refused;
        continue;
      }
      int fd = socket(p->backend.storage.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        ++p->refused;
        continue;
      }
      // Connected: the kernel then passes up only the backend's replies on it.
      if (connect(fd, p->backend.get(), p->backend.len) != 0) {
        close(fd);
        ++p->refused;
        continue;
      }
      auto owned = std::make_unique<Session>();
      s = owned.get();
      s->port = p;
      s->peer = peer;
      s->key = key;
      s->source = source;
      s->fd = fd;
      s->handle = {Handle::Kind::kSession, s};
      p->sessions[key] = std::move(owned);
      ++p->accepted;
      ++udp_open_;
      ++udp_per_source_[source];
      Watch(fd, &s->handle, EPOLLIN, &s->events);
    }
    s->last_active = now;
    // A datagram that does not fit the socket now is dropped, as UDP may.
    send(s->fd, datagram_.data(), static_cast<size_t>(n), MSG_NOSIGNAL);
  }
}

void Forwarder::OnSessionReply(Session* s) {
  for (int i = 0; i < kDatagramsPerEvent; ++i) {
    ssize_t n = recv(s->fd, datagram_.data(), datagram_.size(), 0);
    if (n < 0) {
      // ECONNREFUSED: an earlier datagram found the backend's port closed (ICMP).
      if (errno == EINTR || errno == ECONNREFUSED) continue;
      return;
    }
    s->last_active = clock_->Now();
    sendto(s->port->fd, datagram_.data(), static_cast<size_t>(n), MSG_NOSIGNAL, s->peer.get(), s->peer.len);
  }
}

void Forwarder::CloseSession(Session* s) {
  if (s->closed) return;
  s->closed = true;
  close(s->fd);
  --udp_open_;
  auto source = udp_per_source_.find(s->source);
  if (source != udp_per_source_.end() && --source->second <= 0) udp_per_source_.erase(source);
  auto it = s->port->sessions.find(s->key);
  dead_sessions_.push_back(std::move(it->second));
  s->port->sessions.erase(it);
}

bool Forwarder::Sweep(absl::Time now) {
  if (now - last_sweep_ < kSweepEvery) return false;
  last_sweep_ = now;
  for (auto& [key, port] : ports_) {
    Port* p = port.get();
    if (p->fd < 0 && now >= p->retry_at) Bind(p);
    if (p->fd >= 0 && p->events == 0 && now >= p->retry_at) Watch(p->fd, &p->handle, EPOLLIN, &p->events);
    std::vector<Conn*> expired;
    for (auto& [c, _] : p->conns) {
      if (c->connecting ? now - c->started >= options_.connect_timeout
                        : now - c->last_active >= options_.idle_timeout) {
        expired.push_back(c);
      }
    }
    for (Conn* c : expired) CloseConn(c);
    std::vector<Session*> idle;
    for (auto& [_, s] : p->sessions) {
      if (now - s->last_active >= options_.udp_idle_timeout) idle.push_back(s.get());
    }
    for (Session* s : idle) CloseSession(s);
  }
  return true;
}

void Forwarder::Publish() {
  std::vector<PortStats> stats;
  stats.reserve(ports_.size());
  for (const auto& [key, p] : ports_) {
    PortStats s;
    s.transport = key.first;
    s.port = key.second;
    s.vm_id = p->route.vm_id;
    s.backend = BackendName(p->route);
    s.bound = p->fd >= 0;
    s.error = p->error;
    s.connections = static_cast<int>(p->conns.size() + p->sessions.size());
    s.accepted = p->accepted;
    s.refused = p->refused;
    stats.push_back(std::move(s));
  }
  absl::MutexLock l(&mu_);
  stats_ = std::move(stats);
  open_published_ = open_ + udp_open_;
}

}  // namespace ppn::relay
