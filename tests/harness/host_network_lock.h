#pragma once

// Tests that build fixed-name namespaces, veths and test subnets on the host (an "internet" at
// 198.51.100.0/24, a node service on a fixed port) cannot run beside another copy of themselves
// from a second checkout or Bazel server; Bazel's `exclusive` tag only covers its own run. A
// test holds this lock for its whole process: `static HostNetworkLock lock;` at file scope.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace ppn::testing {

class HostNetworkLock {
 public:
  HostNetworkLock() {
    fd_ = open("/run/ppn-host-network-tests.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ >= 0) flock(fd_, LOCK_EX);  // waits for the other test to finish
  }
  ~HostNetworkLock() {
    if (fd_ >= 0) close(fd_);
  }
  HostNetworkLock(const HostNetworkLock&) = delete;
  HostNetworkLock& operator=(const HostNetworkLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace ppn::testing
