#include "host_agent/port_allocator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"

namespace ppn::host {
namespace {

bool CanBind(uint32_t port, int type) {
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// A range of ports nothing on this machine is likely to use, different per test run.
uint32_t First() { return 41000 + static_cast<uint32_t>(getpid() % 200) * 10; }

TEST_CASE("ports handed out are held against every other binder until released", "[host][ports]") {
  PortAllocator held("127.0.0.1", First(), First() + 3, /*hold_sockets=*/true);
  std::vector<uint32_t> got = *held.Allocate(2);
  REQUIRE(got == std::vector<uint32_t>{First(), First() + 1});
  CHECK_FALSE(CanBind(got[0], SOCK_STREAM));
  CHECK_FALSE(CanBind(got[0], SOCK_DGRAM));

  // A second agent on the same address and range skips them: no two VMs share a forward.
  PortAllocator other("127.0.0.1", First(), First() + 3, /*hold_sockets=*/true);
  CHECK(*other.Allocate(2) == std::vector<uint32_t>{First() + 2, First() + 3});
  CHECK(other.Allocate(1).status().code() == absl::StatusCode::kResourceExhausted);

  held.HandOver(got[1]);  // the migration listener binds it itself
  CHECK(CanBind(got[1], SOCK_STREAM));
  CHECK(held.in_use() == 2);
  held.Release(got);
  CHECK(CanBind(got[0], SOCK_STREAM));
  CHECK(held.in_use() == 0);
}

TEST_CASE("without holding, ports are only checked free and left for QEMU to bind", "[host][ports]") {
  PortAllocator checked("127.0.0.1", First(), First() + 1);
  std::vector<uint32_t> got = *checked.Allocate(1);
  CHECK(CanBind(got[0], SOCK_STREAM));
  CHECK(checked.in_use() == 1);
}

TEST_CASE("a failed allocation takes and holds nothing", "[host][ports]") {
  PortAllocator a("127.0.0.1", First(), First() + 1, /*hold_sockets=*/true);
  CHECK(a.Allocate(3).status().message() ==
        absl::StrCat("no free host ports: need 3 in ", First(), "-", First() + 1, " on 127.0.0.1, 0 in use by VMs"));
  CHECK(a.in_use() == 0);
  CHECK(CanBind(First(), SOCK_STREAM));
}

TEST_CASE("ports of VMs adopted after a restart are held again", "[host][ports]") {
  PortAllocator a("127.0.0.1", First(), First() + 3, /*hold_sockets=*/true);
  a.Reserve({First() + 1});
  CHECK_FALSE(CanBind(First() + 1, SOCK_STREAM));
  CHECK(*a.Allocate(2) == std::vector<uint32_t>{First(), First() + 2});
}

}  // namespace
}  // namespace ppn::host
