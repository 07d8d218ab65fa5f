#pragma once

// Test harness for real-namespace tests of the mesh: a CommandRunner that runs a tool in a
// named network namespace (through `ip netns exec`, as the agent's spawner does with setns),
// namespaces joined by veth pairs, and TCP helpers that run on a thread inside a namespace.
// Root only. Failures are reported to Catch2 by the callers.

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace ppn::mesh::testing {

// The CommandRunner of these tests: argv in `netns` ("" for the test's own), output captured
// (stdout and stderr), an error carrying the output when it exits non-zero.
absl::StatusOr<std::string> RunInNetns(const std::vector<std::string>& argv, const std::string& netns);

// A network namespace for the test's lifetime; its loopback is up. Removing it removes every
// interface in it (and so ends any wireguard-go serving one of them).
class ScopedNetns {
 public:
  explicit ScopedNetns(std::string name);
  ~ScopedNetns();
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;
  const std::string& name() const { return name_; }
  bool ok() const { return ok_; }

 private:
  std::string name_;
  bool ok_ = false;
};

// Joins `a` and `b` with a veth pair named `a_if`/`b_if`, addressed `a_cidr`/`b_cidr`.
absl::Status Connect(const std::string& a, const std::string& a_if, const std::string& a_cidr, const std::string& b,
                     const std::string& b_if, const std::string& b_cidr);

// A TCP server in a namespace that answers every connection with `reply` and closes it.
class TcpServer {
 public:
  TcpServer(const std::string& netns, const std::string& address, uint16_t port, std::string reply);
  ~TcpServer();
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  std::thread thread_;
};

// What a connection from `netns` to address:port reads within `timeout_ms`; "" if it fails.
std::string Fetch(const std::string& netns, const std::string& address, uint16_t port, int timeout_ms = 2000);

}  // namespace ppn::mesh::testing
