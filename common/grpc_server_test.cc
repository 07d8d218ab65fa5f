// The listen list: a node's services bind its mesh address and loopback, each one, or nothing.

#include "common/grpc_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "tests/harness/test_pki.h"

namespace ppn {
namespace {

// Whether a TCP connection to ip:port is accepted.
bool Accepts(const char* ip, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip, &a.sin_addr);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

TEST_CASE("a server listens on every address of a comma-separated list, or on none", "[grpc_server]") {
  ppn::testing::TestPki pki;
  TlsFiles tls = pki.Issue("fleet", "fleet");
  absl::StatusOr<StartedServer> probe = StartMeshServer("127.0.0.1:0", tls, RolePolicy(pki.mesh()), {});
  REQUIRE(probe.ok());
  int port = probe->port;
  probe->server->Shutdown();
  probe->server->Wait();

  const std::string both = absl::StrCat("127.0.0.1:", port, ",127.0.0.2:", port);
  absl::StatusOr<StartedServer> s = StartMeshServer(both, tls, RolePolicy(pki.mesh()), {});
  INFO(s.status().message());
  REQUIRE(s.ok());
  CHECK(s->port == port);
  CHECK(Accepts("127.0.0.1", port));
  CHECK(Accepts("127.0.0.2", port));
  CHECK(!Accepts("127.0.0.3", port));
  s->server->Shutdown();

  // An address this machine does not have: nothing serves, and the error says where it tried.
  absl::StatusOr<StartedServer> bad = StartMeshServer("127.0.0.1:0,192.0.2.1:7101", tls, RolePolicy(pki.mesh()), {});
  CHECK(bad.status().code() == absl::StatusCode::kUnavailable);
  CHECK(bad.status().message() == "cannot listen on 127.0.0.1:0,192.0.2.1:7101");
  CHECK(StartMeshServer(" , ", tls, RolePolicy(pki.mesh()), {}).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ppn
