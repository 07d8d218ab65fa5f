// WireGuardDevice's decisions against a simulated `ip` and `wg`: what it runs to create,
// adopt or replace an interface, and the errors it gives. The real thing runs in
// wireguard_device_netns_test.cc.

#include "mesh/wireguard_device.h"

#include <sys/stat.h>

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "catch2/catch.hpp"
#include "mesh/wireguard_key.h"
#include "tests/harness/temp_dir.h"

namespace ppn::mesh {
namespace {

// A node with at most one WireGuard interface, as `ip` and `wg` would report it.
struct FakeNode {
  bool kernel_wireguard = false;
  bool exists = false;
  std::string kind = "tun";
  std::string public_key;
  uint16_t port = 0;
  std::vector<std::string> addresses;
  std::string fail_prefix;  // a command starting with this fails
  std::string fail_output = "boom";
  std::vector<std::string> calls;

  absl::StatusOr<std::string> Run(const std::vector<std::string>& argv, const std::string& netns) {
    std::string cmd = absl::StrJoin(argv, " ");
    calls.push_back(cmd);
    if (netns != "ns1") return absl::InternalError("wrong namespace");
    if (!fail_prefix.empty() && absl::StartsWith(cmd, fail_prefix))
      return absl::InternalError(cmd + ": " + fail_output);
    if (cmd == "ip -j -d link show") {
      if (!exists) return std::string("[{\"ifname\":\"lo\",\"flags\":[\"UP\"]}]");
      return absl::StrCat("[{\"ifname\":\"wg-t\",\"flags\":[\"POINTOPOINT\",\"UP\"],\"linkinfo\":{\"info_kind\":\"",
                          kind, "\"}}]");
    }
    if (cmd == "wg show wg-t dump") {
      if (!exists || kind == "veth") return absl::InternalError("Unable to access interface");
      return absl::StrCat("PRIVATEKEYPRIVATEKEYPRIVATEKEYPRIVATEKEYPRI=\t", public_key, "\t", port,
                          "\toff\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\t(none)\t192.0.2.9:51820\t10.8.0.9/32\t"
                          "1796165012\t532\t508\t25\n");
    }
    if (cmd == "ip link add ppn-wgprobe type wireguard") {
      return kernel_wireguard ? absl::StatusOr<std::string>("") : absl::InternalError("Error: Unknown device type.");
    }
    if (cmd == "ip link add wg-t type wireguard") {
      if (!kernel_wireguard) return absl::InternalError("Error: Unknown device type.");
      exists = true;
      kind = "wireguard";
      return std::string();
    }
    if (cmd == "wireguard-go wg-t") {
      exists = true;
      kind = "tun";
      return std::string("banner\n");
    }
    if (cmd == "ip link del wg-t") {
      exists = false;
      addresses.clear();
      return std::string();
    }
    if (absl::StartsWith(cmd, "wg set wg-t listen-port ")) {
      port = static_cast<uint16_t>(std::stoi(argv[4]));
      public_key = "set-from-file";
      return std::string();
    }
    if (cmd == "ip -j -4 addr show dev wg-t") {
      std::string info;
      for (const auto& a : addresses) {
        std::string ip = a.substr(0, a.find('/')), len = a.substr(a.find('/') + 1);
        absl::StrAppend(&info, info.empty() ? "" : ",", "{\"family\":\"inet\",\"local\":\"", ip,
                        "\",\"prefixlen\":", len, "}");
      }
      return absl::StrCat("[{\"ifname\":\"wg-t\",\"addr_info\":[", info, "]}]");
    }
    if (cmd == "ip addr flush dev wg-t") {
      addresses.clear();
      return std::string();
    }
    if (absl::StartsWith(cmd, "ip addr add ")) {
      addresses.push_back(argv[3]);
      return std::string();
    }
    return std::string();  // ip link set up, ip link del probe, wg set peers, sysctl
  }
};

struct Fixture {
  ppn::testing::TempDir dir;
  FakeNode node;
  WireGuardKeyPair key = *LoadOrCreatePrivateKeyFile(dir.File("wg.key"));
  WireGuardDeviceOptions options;
  Fixture() {
    options.interface_name = "wg-t";
    options.netns = "ns1";
    options.private_key_file = dir.File("wg.key");
    options.listen_port = 51820;
    options.address = "10.8.0.2";
    options.wireguard_go = "/bin/true";  // found; the fake runner plays its part
    options.tun_path = "/dev/null";      // a character device everywhere
  }
  std::unique_ptr<WireGuardDevice> Device() {
    return *WireGuardDevice::Create(options, [this](const std::vector<std::string>& argv, const std::string& ns) {
      std::vector<std::string> a = argv;
      if (a[0] == "/bin/true") a[0] = "wireguard-go";
      return node.Run(a, ns);
    });
  }
  bool Ran(const std::string& cmd) const {
    return std::find(node.calls.begin(), node.calls.end(), cmd) != node.calls.end();
  }
};

TEST_CASE("Up makes a wireguard-go interface when the kernel has no wireguard", "[mesh][wireguard_device]") {
  Fixture f;
  absl::StatusOr<UpResult> up = f.Device()->Up();
  INFO(up.status().message());
  REQUIRE(up.ok());
  CHECK(!up->adopted);
  CHECK(up->backend == "wireguard-go");
  CHECK(f.Ran("ip link add ppn-wgprobe type wireguard"));
  CHECK(f.Ran("wireguard-go wg-t"));
  CHECK(f.Ran("wg set wg-t listen-port 51820 private-key " + f.options.private_key_file));
  CHECK(f.node.addresses == std::vector<std::string>{"10.8.0.2/24"});
  CHECK(f.Ran("ip link set wg-t up"));
  for (const std::string& c : f.node.calls) CHECK(!absl::StrContains(c, f.key.private_key));

  SECTION("and the kernel's when the probe works") {
    Fixture k;
    k.node.kernel_wireguard = true;
    absl::StatusOr<UpResult> kup = k.Device()->Up();
    REQUIRE(kup.ok());
    CHECK(kup->backend == "kernel");
    CHECK(k.Ran("ip link del ppn-wgprobe"));
    CHECK(k.Ran("ip link add wg-t type wireguard"));
    CHECK(!k.Ran("wireguard-go wg-t"));
  }
}

TEST_CASE("Up adopts an interface with the same key and port and replaces any other", "[mesh][wireguard_device]") {
  Fixture f;
  f.node.exists = true;
  f.node.public_key = f.key.public_key;
  f.node.port = 51820;
  f.node.addresses = {"10.8.0.2/24"};

  SECTION("same key and port: kept, peers and all") {
    absl::StatusOr<UpResult> up = f.Device()->Up();
    REQUIRE(up.ok());
    CHECK(up->adopted);
    CHECK(up->backend == "wireguard-go");
    CHECK(!f.Ran("ip link del wg-t"));
    CHECK(!f.Ran("wireguard-go wg-t"));
    CHECK(!f.Ran("ip addr flush dev wg-t"));
    SECTION("with its address corrected") {
      f.node.calls.clear();
      f.node.addresses = {"10.8.0.7/24", "10.8.0.2/24"};
      REQUIRE(f.Device()->Up()->adopted);
      CHECK(f.Ran("ip addr flush dev wg-t"));
      CHECK(f.node.addresses == std::vector<std::string>{"10.8.0.2/24"});
    }
  }
  SECTION("another port: replaced") {
    f.node.port = 51999;
    absl::StatusOr<UpResult> up = f.Device()->Up();
    REQUIRE(up.ok());
    CHECK(!up->adopted);
    CHECK(f.Ran("ip link del wg-t"));
    CHECK(f.Ran("wireguard-go wg-t"));
  }
  SECTION("another key: replaced") {
    f.node.public_key = GenerateKeyPair()->public_key;
    CHECK(!f.Device()->Up()->adopted);
    CHECK(f.Ran("ip link del wg-t"));
  }
  SECTION("not WireGuard at all: replaced") {
    f.node.kind = "veth";
    CHECK(!f.Device()->Up()->adopted);
    CHECK(f.Ran("ip link del wg-t"));
  }
}

TEST_CASE("Up refuses a bad key file before it touches the node", "[mesh][wireguard_device]") {
  Fixture f;
  SECTION("readable by others") {
    chmod(f.options.private_key_file.c_str(), 0644);
    CHECK(f.Device()->Up().status().code() == absl::StatusCode::kFailedPrecondition);
  }
  SECTION("not a WireGuard key") {
    std::ofstream(f.options.private_key_file) << "hello\n";
    absl::Status s = f.Device()->Up().status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(s.message(), "does not hold a WireGuard private key"));
  }
  SECTION("missing") {
    f.options.private_key_file = f.dir.File("nope.key");
    CHECK(f.Device()->Up().status().code() == absl::StatusCode::kNotFound);
  }
  CHECK(f.node.calls.empty());
}

TEST_CASE("Up names what wireguard-go lacks and leaves nothing behind", "[mesh][wireguard_device]") {
  Fixture f;
  std::string message;
  SECTION("wireguard-go missing") {
    f.options.wireguard_go = "/nonexistent/wireguard-go";
    message =
        "WireGuard interface wg-t (wireguard-go): the kernel has no wireguard and /nonexistent/wireguard-go is "
        "not installed (apt-get install wireguard-go wireguard-tools, or run tools/setup)";
  }
  SECTION("no tun device") {
    f.options.tun_path = "/nonexistent/tun";
    message =
        "WireGuard interface wg-t (wireguard-go) needs the tun device /nonexistent/tun, which is missing (a "
        "container needs --device /dev/net/tun)";
  }
  SECTION("kernel forced but absent") {
    f.options.backend = Backend::kKernel;
    message = "WireGuard interface wg-t: the kernel has no wireguard module (backend forced to kernel)";
  }
  SECTION("the name taken in another namespace") {
    f.node.fail_prefix = "wireguard-go wg-t";
    f.node.fail_output =
        "\xe2\x94\x8c\xe2\x94\x80\xe2\x94\x90\nERROR: (wg-t) 2026/12/01 UAPI listen error: unix socket in use\n";
    message =
        "WireGuard interface name wg-t is taken by a wireguard-go in another network namespace of this machine "
        "(/var/run/wireguard/wg-t.sock): choose another interface name";
  }
  absl::Status s = f.Device()->Up().status();
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.message() == message);
  CHECK(!f.node.exists);
}

TEST_CASE("a configuration step that fails removes the new interface again", "[mesh][wireguard_device]") {
  Fixture f;
  f.node.fail_prefix = "wg set wg-t listen-port";
  f.node.fail_output = "Unable to modify interface: Address in use";
  absl::Status s = f.Device()->Up().status();
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(s.message(), "WireGuard listen port 51820 is in use"));
  CHECK(!f.node.exists);
  CHECK(f.Ran("ip link del wg-t"));
}

TEST_CASE("the userspace prerequisites are checked in order with clear messages", "[mesh][wireguard_device]") {
  WireGuardDeviceOptions o;
  UserspaceFacts facts{true, true, 0, true};
  CHECK(CheckUserspacePrerequisites(facts, o).ok());
  facts.net_admin = false;
  facts.euid = 1000;
  CHECK(CheckUserspacePrerequisites(facts, o).message() ==
        "WireGuard interface ppn-wg (wireguard-go) needs root (CAP_NET_ADMIN); running as uid 1000 without it");
  CHECK(StatusHasNetAdmin("Name:\tx\nCapEff:\t000001ffffffffff\n"));
  CHECK(!StatusHasNetAdmin("Name:\tx\nCapEff:\t0000000000000000\n"));
  CHECK(!StatusHasNetAdmin("CapEff:\tzz\n"));
}

TEST_CASE("wg show dump is parsed without keeping the private key", "[mesh][wireguard_device]") {
  std::string priv = GenerateKeyPair()->private_key, pub = GenerateKeyPair()->public_key;
  std::string peer = GenerateKeyPair()->public_key, quiet = GenerateKeyPair()->public_key;
  absl::StatusOr<DeviceState> s =
      ParseWgDump(absl::StrCat(priv, "\t", pub, "\t51820\toff\n", peer,
                               "\t(none)\t192.0.2.9:51820\t10.8.0.9/32,10.8.1.0/24\t1796165012\t532\t508\t25\n", quiet,
                               "\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"));
  REQUIRE(s.ok());
  CHECK(s->public_key == pub);
  CHECK(s->listen_port == 51820);
  REQUIRE(s->peers.size() == 2);
  CHECK(s->peers[0].public_key == peer);
  CHECK(s->peers[0].endpoint == "192.0.2.9:51820");
  CHECK(s->peers[0].allowed_ips == std::vector<std::string>{"10.8.0.9/32", "10.8.1.0/24"});
  CHECK(s->peers[0].latest_handshake == absl::FromUnixSeconds(1796165012));
  CHECK(s->peers[0].rx_bytes == 532);
  CHECK(s->peers[0].tx_bytes == 508);
  CHECK(s->peers[0].persistent_keepalive_seconds == 25);
  CHECK(s->peers[1].endpoint.empty());
  CHECK(s->peers[1].allowed_ips.empty());
  CHECK(s->peers[1].latest_handshake == absl::InfinitePast());
  absl::Status bad = ParseWgDump(priv + "\tshort\n").status();
  CHECK(bad.code() == absl::StatusCode::kInternal);
  CHECK(!absl::StrContains(bad.message(), priv));
}

TEST_CASE("peer updates become one wg set, and bad values are refused", "[mesh][wireguard_device]") {
  std::string a = GenerateKeyPair()->public_key, b = GenerateKeyPair()->public_key, c = GenerateKeyPair()->public_key;
  std::vector<PeerUpdate> updates(3);
  updates[0].peer = {a, "203.0.113.7:51820", {"10.8.0.1/32"}, 0};
  updates[1].peer = {b, "192.0.2.3:51820", {"10.8.0.0/24"}, 25};
  updates[1].set_endpoint = false;  // roamed: keep what the device learnt
  updates[2].peer.public_key = c;
  updates[2].remove = true;
  absl::StatusOr<std::vector<std::string>> argv = WgSetArgs("ppn-wg", updates);
  REQUIRE(argv.ok());
  CHECK(absl::StrJoin(*argv, " ") == absl::StrCat("wg set ppn-wg peer ", a,
                                                  " endpoint 203.0.113.7:51820 persistent-keepalive off allowed-ips "
                                                  "10.8.0.1/32 peer ",
                                                  b, " persistent-keepalive 25 allowed-ips 10.8.0.0/24 peer ", c,
                                                  " remove"));
  updates[0].peer.endpoint = "no-port";
  CHECK(WgSetArgs("ppn-wg", updates).status().message() == "peer endpoint \"no-port\" is not host:port");
  updates[0].peer.endpoint = "";
  updates[0].peer.allowed_ips = {"10.8.0.1"};
  CHECK(WgSetArgs("ppn-wg", updates).status().code() == absl::StatusCode::kInvalidArgument);
  updates[0].peer.allowed_ips = {};
  updates[0].peer.public_key = "x";
  CHECK(WgSetArgs("ppn-wg", updates).status().message() == "peer key \"x\" is not a WireGuard key");
}

TEST_CASE("device options are validated", "[mesh][wireguard_device]") {
  WireGuardDeviceOptions o;
  o.address = "10.8.0.2";
  o.private_key_file = "/k";
  auto runner = [](const std::vector<std::string>&, const std::string&) -> absl::StatusOr<std::string> { return ""; };
  CHECK(WireGuardDevice::Create(o, runner).ok());
  o.interface_name = "a-name-longer-than-15";
  CHECK(WireGuardDevice::Create(o, runner).status().code() == absl::StatusCode::kInvalidArgument);
  o.interface_name = "ppn wg";
  CHECK(WireGuardDevice::Create(o, runner).status().code() == absl::StatusCode::kInvalidArgument);
  o.interface_name = "ppn-wg";
  o.address = "10.8.0";
  CHECK(WireGuardDevice::Create(o, runner).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ppn::mesh
