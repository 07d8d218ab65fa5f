#include "mesh/testing/netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace ppn::mesh::testing {
namespace {

// Runs `fn` on a thread that entered `netns`: the sockets it opens live there.
template <typename T>
T InNamespace(const std::string& netns, std::function<T()> fn) {
  T result{};
  std::thread t([&] {
    int fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    bool entered = setns(fd, CLONE_NEWNET) == 0;
    close(fd);
    if (entered) result = fn();
  });
  t.join();
  return result;
}

sockaddr_in Address(const std::string& address, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, address.c_str(), &a.sin_addr);
  return a;
}

}  // namespace

absl::StatusOr<std::string> RunInNetns(const std::vector<std::string>& argv, const std::string& netns) {
  std::vector<std::string> full = argv;
  if (!netns.empty()) full.insert(full.begin(), {"ip", "netns", "exec", netns});
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    std::vector<char*> args;
    for (auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // Bazel's test PATH leaves out the sbin directories where ip, sysctl and nft live.
    setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, n);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "), ": ", out));
  }
  return out;
}

ScopedNetns::ScopedNetns(std::string name) : name_(std::move(name)) {
  RunInNetns({"ip", "netns", "del", name_}, "").IgnoreError();
  ok_ = RunInNetns({"ip", "netns", "add", name_}, "").ok() && RunInNetns({"ip", "link", "set", "lo", "up"}, name_).ok();
}

ScopedNetns::~ScopedNetns() {
  // Every interface first: a wireguard-go serving one keeps the namespace alive after
  // `ip netns del`, and it exits only when its interface goes.
  absl::StatusOr<std::string> links = RunInNetns({"ip", "-o", "link", "show"}, name_);
  for (absl::string_view line : absl::StrSplit(links.value_or(""), '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(": @"), absl::SkipEmpty());
    if (f.size() > 1 && f[1] != "lo") RunInNetns({"ip", "link", "del", f[1]}, name_).IgnoreError();
  }
  RunInNetns({"ip", "netns", "del", name_}, "").IgnoreError();
}

absl::Status Connect(const std::string& a, const std::string& a_if, const std::string& a_cidr, const std::string& b,
                     const std::string& b_if, const std::string& b_cidr) {
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b},
           {"ip", "-n", a, "addr", "add", a_cidr, "dev", a_if},
           {"ip", "-n", b, "addr", "add", b_cidr, "dev", b_if},
           {"ip", "-n", a, "link", "set", a_if, "up"},
           {"ip", "-n", b, "link", "set", b_if, "up"}}) {
    absl::StatusOr<std::string> r = RunInNetns(argv, "");
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

TcpServer::TcpServer(const std::string& netns, const std::string& address, uint16_t port, std::string reply) {
  fd_ = InNamespace<int>(netns, [&] {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = Address(address, port);
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(s, 64) != 0) {
      close(s);
      return -1;
    }
    return s;
  });
  if (fd_ < 0) return;
  thread_ = std::thread([fd = fd_, reply] {
    while (true) {
      int c = accept(fd, nullptr, nullptr);
      if (c < 0) return;
      (void)!write(c, reply.data(), reply.size());
      close(c);
    }
  });
}

TcpServer::~TcpServer() {
  if (fd_ < 0) return;
  shutdown(fd_, SHUT_RDWR);
  close(fd_);
  thread_.join();
}

std::string Fetch(const std::string& netns, const std::string& address, uint16_t port, int timeout_ms) {
  return InNamespace<std::string>(netns, [&] {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a = Address(address, port);
    std::string out;
    int rc = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    pollfd p{s, POLLOUT, 0};
    if (rc == 0 || (errno == EINPROGRESS && poll(&p, 1, timeout_ms) == 1)) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      p = {s, POLLIN, 0};
      if (err == 0 && poll(&p, 1, timeout_ms) == 1) {
        char buf[256];
        ssize_t n = read(s, buf, sizeof buf);
        if (n > 0) out.assign(buf, n);
      }
    }
    close(s);
    return out;
  });
}

}  // namespace ppn::mesh::testing
