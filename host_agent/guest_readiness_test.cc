#include "host_agent/guest_readiness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

// QEMU's end of a guest channel: a listening Unix socket, and the guest's writes on it.
struct Channel {
  std::string dir, path;
  int listen_fd = -1, conn = -1;
  Channel() {
    char tmpl[] = "/tmp/ppnready-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    path = dir + "/identity.sock";
  }
  void Listen() {
    listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    REQUIRE(bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(listen_fd, 1) == 0);
  }
  void Accept() {
    conn = accept(listen_fd, nullptr, nullptr);
    REQUIRE(conn >= 0);
  }
  void Write(const std::string& s) { REQUIRE(write(conn, s.data(), s.size()) == static_cast<ssize_t>(s.size())); }
  ~Channel() {
    if (conn >= 0) close(conn);
    if (listen_fd >= 0) close(listen_fd);
    std::filesystem::remove_all(dir);
  }
};

// Polls until ready or `within` passes.
std::optional<std::string> PollFor(GuestReadiness& r, absl::Duration within) {
  absl::Time end = absl::Now() + within;
  while (absl::Now() < end) {
    if (auto why = r.Poll(absl::Now())) return why;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return std::nullopt;
}

TEST_CASE("a guest is ready when it writes the line PPN-READY on its channel and not before", "[agent][readiness]") {
  Channel ch;
  GuestReadiness r({ch.path, "", 0});
  CHECK_FALSE(r.Poll(absl::Now()).has_value());  // QEMU has no socket yet: no error, just waiting
  ch.Listen();
  CHECK_FALSE(r.Poll(absl::Now()).has_value());
  ch.Accept();
  ch.Write("PPN-IDENTITY-READY 1\nPPN-READY-NOT\nxPPN-READY\nPPN-REA");
  CHECK_FALSE(PollFor(r, absl::Milliseconds(50)).has_value());
  SECTION("the line completed") {
    ch.Write("DY\r\n");
    CHECK(PollFor(r, absl::Seconds(2)) == std::optional<std::string>("the guest said PPN-READY"));
  }
  SECTION("an overlong line that ends in PPN-READY is not the line") {
    ch.Write("DY" + std::string(4 * GuestReadiness::kMaxLine, 'x') + "PPN-READY\n");
    CHECK_FALSE(PollFor(r, absl::Milliseconds(50)).has_value());
    ch.Write("PPN-READY\n");
    CHECK(PollFor(r, absl::Seconds(2)).has_value());
  }
}

// A TCP listener on 127.0.0.1 standing for a forwarded port.
struct Port {
  int fd = -1;
  uint32_t port = 0;
  Port() {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(fd, 8) == 0);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~Port() { close(fd); }
};

TEST_CASE("a forwarded port counts as ready only when its service speaks first", "[agent][readiness]") {
  Port p;
  GuestReadiness r({"", "127.0.0.1", p.port});
  // Accepted but silent, as QEMU's user-mode network holds a connection for a booting guest.
  CHECK_FALSE(PollFor(r, absl::Milliseconds(300)).has_value());
  int silent = accept(p.fd, nullptr, nullptr);
  REQUIRE(silent >= 0);
  CHECK_FALSE(PollFor(r, GuestReadiness::kProbeTimeout + absl::Milliseconds(100)).has_value());
  close(silent);
  // The next try gets a banner.
  std::optional<std::string> why;
  absl::Time end = absl::Now() + absl::Seconds(5);
  while (!why.has_value() && absl::Now() < end) {
    why = r.Poll(absl::Now());
    pollfd pf{p.fd, POLLIN, 0};
    if (poll(&pf, 1, 5) == 1) {
      int c = accept(p.fd, nullptr, nullptr);
      REQUIRE(write(c, "SSH-2.0-x\r\n", 11) == 11);
      why = PollFor(r, absl::Seconds(1));
      close(c);
    }
  }
  CHECK(why == std::optional<std::string>("port " + std::to_string(p.port) + " answered"));
}

TEST_CASE("a closed forwarded port is not ready", "[agent][readiness]") {
  uint32_t port;
  {
    Port p;
    port = p.port;
  }
  GuestReadiness r({"", "127.0.0.1", port});
  CHECK_FALSE(PollFor(r, absl::Milliseconds(200)).has_value());
}

void Append(const std::string& path, const std::string& text) {
  FILE* f = fopen(path.c_str(), "a");
  REQUIRE(f != nullptr);
  REQUIRE(fwrite(text.data(), 1, text.size(), f) == text.size());
  fclose(f);
}

TEST_CASE("the image's console marker counts once this boot prints it, even split across reads",
          "[agent][readiness]") {
  ppn::testing::TempDir dir;
  std::string log = dir.File("console.log");
  // An earlier boot of the VM printed the marker already: QEMU appends, so it must not count.
  Append(log, "Debian GNU/Linux 12 web ttyS0\n\nweb login: \n[ power down ]\n");
  GuestReadiness::Target t;
  t.console_log = log;
  t.console_marker = "web login:";
  GuestReadiness r(t);
  CHECK_FALSE(r.Poll(absl::Now()).has_value());
  Append(log, "[    0.000000] Linux version 6.1\nDebian GNU/Linux 12 web ttyS0\n\nweb log");
  CHECK_FALSE(r.Poll(absl::Now()).has_value());
  Append(log, "in: ");
  CHECK(r.Poll(absl::Now()) == std::optional<std::string>("its console showed the image's ready marker"));
}

TEST_CASE("a console log that starts again (truncated) is read from its start", "[agent][readiness]") {
  ppn::testing::TempDir dir;
  std::string log = dir.File("console.log");
  Append(log, std::string(4096, 'x'));
  GuestReadiness r({"", "", 0, log, "READY-MARK"});
  CHECK_FALSE(r.Poll(absl::Now()).has_value());
  REQUIRE(truncate(log.c_str(), 0) == 0);
  Append(log, "boot\nREADY-MARK\n");
  CHECK(r.Poll(absl::Now()).has_value());
}

TEST_CASE("no console marker, or no log yet, is never ready by the console", "[agent][readiness]") {
  ppn::testing::TempDir dir;
  GuestReadiness missing({"", "", 0, dir.File("absent.log"), "login:"});
  CHECK_FALSE(missing.Poll(absl::Now()).has_value());
  Append(dir.File("c.log"), "login:");
  GuestReadiness unmarked({"", "", 0, dir.File("c.log"), ""});
  Append(dir.File("c.log"), "login:");
  CHECK_FALSE(unmarked.Poll(absl::Now()).has_value());
}

}  // namespace
}  // namespace ppn::host
