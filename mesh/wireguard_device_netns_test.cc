// WireGuardDevice for real: wireguard-go (the kernel here has no wireguard) in two network
// namespaces joined by a veth pair. Root only.

#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "mesh/testing/netns.h"
#include "mesh/wireguard_device.h"
#include "mesh/wireguard_key.h"
#include "tests/harness/temp_dir.h"

namespace ppn::mesh {
namespace {

using testing::Fetch;
using testing::RunInNetns;
using testing::ScopedNetns;
using testing::TcpServer;

struct Node {
  WireGuardDeviceOptions options;
  WireGuardKeyPair key;
  std::unique_ptr<WireGuardDevice> device;
  Node(const ppn::testing::TempDir& dir, const std::string& netns, const std::string& ifname,
       const std::string& address, uint16_t port) {
    options.interface_name = ifname;
    options.netns = netns;
    options.private_key_file = dir.File(ifname + ".key");
    options.listen_port = port;
    options.address = address;
    key = *LoadOrCreatePrivateKeyFile(options.private_key_file);
    device = *WireGuardDevice::Create(options, RunInNetns);
  }
};

bool SocketGone(const std::string& ifname) {
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  struct stat st;
  while (stat(("/var/run/wireguard/" + ifname + ".sock").c_str(), &st) == 0) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

const PeerState* PeerOf(const DeviceState& s, const std::string& key) {
  for (const PeerState& p : s.peers) {
    if (p.public_key == key) return &p;
  }
  return nullptr;
}

TEST_CASE("two devices in namespaces pass traffic, and a restart adopts the interface with its peers",
          "[mesh][wireguard_device][netns]") {
  REQUIRE(geteuid() == 0);  // namespaces and tun devices need root; CI runs as root
  ppn::testing::TempDir dir;
  ScopedNetns a("ppnt-dev-a"), b("ppnt-dev-b");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(testing::Connect(a.name(), "eth0", "192.168.213.1/24", b.name(), "eth0", "192.168.213.2/24").ok());
  Node na(dir, a.name(), "ppnt-dev-a", "10.8.0.2", 51821), nb(dir, b.name(), "ppnt-dev-b", "10.8.0.3", 51822);

  absl::StatusOr<UpResult> up_a = na.device->Up();
  INFO(up_a.status().message());
  REQUIRE(up_a.ok());
  CHECK(!up_a->adopted);
  CHECK(up_a->backend == "wireguard-go");
  REQUIRE(nb.device->Up().ok());
  PeerUpdate to_b, to_a;
  to_b.peer = {nb.key.public_key, "192.168.213.2:51822", {"10.8.0.3/32"}, 0};
  to_a.peer = {na.key.public_key, "", {"10.8.0.2/32"}, 25};  // as if a were behind NAT
  REQUIRE(na.device->UpdatePeers({to_b}).ok());
  REQUIRE(nb.device->UpdatePeers({to_a}).ok());

  TcpServer server(b.name(), "10.8.0.3", 7000, "through the tunnel\n");
  REQUIRE(server.ok());
  CHECK(Fetch(a.name(), "10.8.0.3", 7000) == "through the tunnel\n");
  DeviceState state_b = *nb.device->State();
  CHECK(state_b.up);
  CHECK(state_b.public_key == nb.key.public_key);
  CHECK(state_b.listen_port == 51822);
  const PeerState* seen_a = PeerOf(state_b, na.key.public_key);
  REQUIRE(seen_a != nullptr);
  CHECK(seen_a->endpoint == "192.168.213.1:51821");  // learnt from a's first packet
  CHECK(seen_a->latest_handshake > absl::Now() - absl::Minutes(1));
  CHECK(seen_a->rx_bytes > 0);
  CHECK(seen_a->persistent_keepalive_seconds == 25);
  // The underlay carries only WireGuard: nothing listens on the veth address.
  CHECK(Fetch(a.name(), "192.168.213.2", 7000, 300).empty());

  SECTION("a second Up with the same key and port adopts it: peers kept, traffic flows") {
    std::unique_ptr<WireGuardDevice> again = *WireGuardDevice::Create(na.options, RunInNetns);
    absl::StatusOr<UpResult> up = again->Up();
    REQUIRE(up.ok());
    CHECK(up->adopted);
    CHECK(PeerOf(*again->State(), nb.key.public_key) != nullptr);
    CHECK(Fetch(a.name(), "10.8.0.3", 7000) == "through the tunnel\n");
  }
  SECTION("an Up with another port replaces it, without peers") {
    WireGuardDeviceOptions moved = na.options;
    moved.listen_port = 51831;
    std::unique_ptr<WireGuardDevice> other = *WireGuardDevice::Create(moved, RunInNetns);
    absl::StatusOr<UpResult> up = other->Up();
    REQUIRE(up.ok());
    CHECK(!up->adopted);
    DeviceState s = *other->State();
    CHECK(s.listen_port == 51831);
    CHECK(s.peers.empty());
  }
  SECTION("a removed peer stops the traffic") {
    PeerUpdate remove;
    remove.peer.public_key = nb.key.public_key;
    remove.remove = true;
    REQUIRE(na.device->UpdatePeers({remove}).ok());
    CHECK(Fetch(a.name(), "10.8.0.3", 7000, 500).empty());
  }
  SECTION("Down removes the interface and ends wireguard-go") {
    REQUIRE(na.device->Down().ok());
    CHECK(!na.device->State()->up);
    CHECK(!RunInNetns({"ip", "link", "show", "ppnt-dev-a"}, a.name()).ok());
    CHECK(SocketGone("ppnt-dev-a"));
    CHECK(na.device->Down().ok());  // idempotent
  }
  (void)na.device->Down();
  (void)nb.device->Down();
}

TEST_CASE("an interface name a wireguard-go of another namespace holds is refused", "[mesh][wireguard_device][netns]") {
  REQUIRE(geteuid() == 0);
  ppn::testing::TempDir dir;
  ScopedNetns a("ppnt-dev-a"), b("ppnt-dev-b");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  Node first(dir, a.name(), "ppnt-dev-x", "10.8.0.2", 51823);
  REQUIRE(first.device->Up().ok());
  WireGuardDeviceOptions clash = first.options;
  clash.netns = b.name();
  clash.listen_port = 51824;
  absl::Status s = (*WireGuardDevice::Create(clash, RunInNetns))->Up().status();
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(s.message(), "is taken by a wireguard-go in another network namespace"));
  CHECK(!RunInNetns({"ip", "link", "show", "ppnt-dev-x"}, b.name()).ok());
  CHECK(first.device->State()->up);  // the first is untouched
  REQUIRE(first.device->Down().ok());
}

TEST_CASE("forwarding is enabled on the mesh interface only", "[mesh][wireguard_device][netns]") {
  REQUIRE(geteuid() == 0);
  ppn::testing::TempDir dir;
  ScopedNetns h("ppnt-dev-h");
  REQUIRE(h.ok());
  // A new namespace copies the machine's settings, which may forward already.
  REQUIRE(RunInNetns({"sysctl", "-q", "-w", "net.ipv4.ip_forward=0"}, h.name()).ok());
  Node hub(dir, h.name(), "ppnt-dev-h", "10.8.0.1", 51825);
  REQUIRE(hub.device->Up().ok());
  REQUIRE(hub.device->EnableForwarding().ok());
  CHECK(*RunInNetns({"sysctl", "-n", "net/ipv4/conf/ppnt-dev-h/forwarding"}, h.name()) == "1\n");
  CHECK(*RunInNetns({"sysctl", "-n", "net/ipv4/conf/lo/forwarding"}, h.name()) == "0\n");
  CHECK(*RunInNetns({"sysctl", "-n", "net.ipv4.ip_forward"}, h.name()) == "0\n");
  REQUIRE(hub.device->Down().ok());
}

}  // namespace
}  // namespace ppn::mesh
