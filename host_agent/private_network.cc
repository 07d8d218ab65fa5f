#include "host_agent/private_network.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <openssl/sha.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "mesh/wireguard_key.h"
#include "nlohmann/json.hpp"

namespace ppn::host {
namespace {

constexpr char kBridge[] = "br0";
constexpr char kUplink[] = "up0";  // the router's end of its tunnel's uplink

std::string Hash(absl::string_view s, size_t bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), bytes));
}

std::string RouterPrefix(const std::string& scope) { return absl::StrCat("ppn.", scope, ".net."); }

std::vector<std::string> NamespacesWithPrefix(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* dir = opendir("/run/netns");
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    if (absl::StartsWith(e->d_name, prefix)) out.push_back(e->d_name);
  }
  closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

constexpr char kUplinkClaims[] = "/run/ppn/uplinks";
constexpr uint32_t kUplinkBase = (10u << 24) | (215u << 16);  // 10.215.0.0/16
constexpr uint32_t kUplinks = 1u << 14;                       // /30s in it

std::string Dotted(uint32_t host_order) {
  in_addr a;
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string TunnelName(const std::string& scope, const std::string& network_id) {
  return "pw" + Hash(absl::StrCat(scope, "/", network_id), 6);
}

// The node's table of `scope`'s tunnel forwards (nft names hold no '-').
std::string TunnelTable(const std::string& scope) {
  std::string out = "ppnt_" + scope;
  for (char& c : out) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return out;
}

std::string UplinkName(const std::string& scope, const std::string& network_id) {
  return "pu" + Hash(absl::StrCat(scope, "/", network_id), 6);
}

// The uplink index `owner` ("<scope> <network>") holds, claiming the lowest free one if none.
absl::StatusOr<uint32_t> ClaimUplink(const std::string& owner) {
  std::error_code ec;
  std::filesystem::create_directories(kUplinkClaims, ec);
  DIR* dir = opendir(kUplinkClaims);
  if (dir != nullptr) {
    while (dirent* d = readdir(dir)) {
      uint32_t index;
      if (!absl::SimpleAtoi(d->d_name, &index)) continue;
      if (absl::StripAsciiWhitespace(ReadFile(absl::StrCat(kUplinkClaims, "/", d->d_name)).value_or("")) == owner) {
        closedir(dir);
        return index;
      }
    }
    closedir(dir);
  }
  std::string content = owner + "\n";
  for (uint32_t index = 0; index < kUplinks; ++index) {
    std::string path = absl::StrCat(kUplinkClaims, "/", index);
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return absl::FailedPreconditionError(
          absl::StrCat("cannot claim a tunnel uplink in ", kUplinkClaims, ": ", std::strerror(errno)));
    }
    bool ok = write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
    close(fd);
    if (!ok) {
      unlink(path.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", path));
    }
    return index;
  }
  return absl::ResourceExhaustedError("no tunnel uplink is left on this host");
}

void ReleaseUplink(const std::string& owner) {
  DIR* dir = opendir(kUplinkClaims);
  if (dir == nullptr) return;
  while (dirent* d = readdir(dir)) {
    std::string path = absl::StrCat(kUplinkClaims, "/", d->d_name);
    if (absl::StripAsciiWhitespace(ReadFile(path).value_or("")) == owner) unlink(path.c_str());
  }
  closedir(dir);
}

// Deleting its interface ends wireguard-go, which otherwise keeps the namespace (and the
// uplink in it) alive after `ip netns del`.
void StopTunnel(const CommandRunner& run, const std::string& ns, const std::string& wg) {
  if (!run({"ip", "-n", ns, "link", "del", wg}, "").ok()) return;
  std::string sock = absl::StrCat("/var/run/wireguard/", wg, ".sock");
  absl::Time deadline = absl::Now() + absl::Seconds(3);
  while (access(sock.c_str(), F_OK) == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
}

// WireGuard adds 80 bytes (IPv6 outer header at worst) to what it carries; the tunnel's UDP
// leaves the node through the device that routes to `mesh_address` (the uplink veth's 1500
// on a loopback mesh).
uint32_t TunnelMtu(const CommandRunner& run, const std::string& mesh_address) {
  uint32_t outer = 1500;
  absl::StatusOr<std::string> route = run({"ip", "-j", "route", "get", mesh_address}, "");
  nlohmann::json j = nlohmann::json::parse(route.value_or(""), nullptr, /*allow_exceptions=*/false);
  if (j.is_array() && !j.empty() && j[0].is_object()) {
    std::string dev = j[0].value("dev", "");
    uint32_t mtu = 0;
    if (!dev.empty() && dev != "lo" &&
        absl::SimpleAtoi(
            absl::StripAsciiWhitespace(ReadFile(absl::StrCat("/sys/class/net/", dev, "/mtu")).value_or("")), &mtu) &&
        mtu >= 1280) {
      outer = std::min(outer, mtu);
    }
  }
  return outer - 80;
}

void RemoveRouter(const CommandRunner& run, const std::string& scope, const std::string& ns,
                  const std::string& network_id) {
  StopTunnel(run, ns, TunnelName(scope, network_id));
  // Not left to the namespace's removal, which the kernel finishes later.
  run({"ip", "link", "del", UplinkName(scope, network_id)}, "").IgnoreError();
  run({"ip", "netns", "del", ns}, "").IgnoreError();
  ReleaseUplink(absl::StrCat(scope, " ", network_id));
}

bool ValidNetworkId(const std::string& id) {
  if (id.empty() || id.size() > 40) return false;
  return std::all_of(id.begin(), id.end(),
                     [](char c) { return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-'; });
}

bool ValidMac(const std::string& mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < mac.size(); ++i) {
    char c = mac[i];
    if (i % 3 == 2 ? c != ':' : !absl::ascii_isxdigit(c)) return false;
  }
  // Unicast: the low bit of the first octet, which is the low bit of its second hex digit, is 0.
  char c = absl::ascii_tolower(mac[1]);
  int low = c >= 'a' ? c - 'a' + 10 : c - '0';
  return (low & 1) == 0;
}

}  // namespace

absl::Status ValidatePrivateNics(const std::vector<PrivateNic>& nics) {
  if (nics.size() > kMaxPrivateNics) {
    return absl::InvalidArgumentError(absl::StrCat("a VM may be on at most ", kMaxPrivateNics, " private networks"));
  }
  std::set<std::string> seen;
  for (const PrivateNic& n : nics) {
    if (!ValidNetworkId(n.network_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("private network id \"", n.network_id.substr(0, 48), "\" must be 1-40 characters of [a-z0-9-]"));
    }
    if (!seen.insert(n.network_id).second) {
      return absl::InvalidArgumentError(absl::StrCat("private network ", n.network_id, " is named twice"));
    }
    in_addr a;
    if (inet_pton(AF_INET, n.address.c_str(), &a) != 1 || n.prefix_length < 8 || n.prefix_length > 30) {
      return absl::InvalidArgumentError(
          absl::StrCat("private network ", n.network_id, ": the address must be IPv4 with a prefix length of 8-30"));
    }
    if (!n.mac.empty() && !ValidMac(n.mac)) {
      return absl::InvalidArgumentError(
          absl::StrCat("private network ", n.network_id, ": the MAC must be a unicast xx:xx:xx:xx:xx:xx"));
    }
  }
  return absl::OkStatus();
}

std::string GratuitousArpFrame(const std::string& mac, const std::string& address) {
  in_addr ip;
  if (!ValidMac(mac) || inet_pton(AF_INET, address.c_str(), &ip) != 1) return "";
  std::string hw;
  for (absl::string_view octet : absl::StrSplit(mac, ':')) hw += absl::HexStringToBytes(octet);
  const std::string pa(reinterpret_cast<const char*>(&ip.s_addr), 4);  // network order already
  std::string f(6, '\xff');                                            // to everyone on the link
  absl::StrAppend(&f, hw, std::string("\x08\x06", 2));                 // from the router; ARP
  // Ethernet, IPv4, 6-byte and 4-byte addresses, a request (as Linux's own announcements are).
  absl::StrAppend(&f, std::string("\x00\x01\x08\x00\x06\x04\x00\x01", 8));
  // Sender and target are both the announced address: every host that has it updates it.
  absl::StrAppend(&f, hw, pa, std::string(6, '\0'), pa);
  f.resize(60, '\0');
  return f;
}

absl::Status AnnounceAddresses(const std::string& netns, const std::string& interface_name, const std::string& mac,
                               const std::vector<std::string>& addresses, int rounds) {
  std::vector<std::string> frames;
  for (const std::string& a : addresses) {
    frames.push_back(GratuitousArpFrame(mac, a));
    if (frames.back().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot announce \"", a.substr(0, 64), "\" at \"", mac.substr(0, 32), "\""));
    }
  }
  if (frames.empty()) return absl::OkStatus();
  absl::Status result;
  // A thread of its own enters the namespace: the socket stays there, the agent's threads don't.
  std::thread sender([&] {
    if (!netns.empty()) {
      int fd = open(absl::StrCat("/run/netns/", netns).c_str(), O_RDONLY | O_CLOEXEC);
      bool entered = fd >= 0 && setns(fd, CLONE_NEWNET) == 0;
      if (fd >= 0) close(fd);
      if (!entered) {
        result = absl::FailedPreconditionError(
            absl::StrCat("cannot enter network namespace ", netns, ": ", std::strerror(errno)));
        return;
      }
    }
    // Protocol 0: this socket only sends.
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    unsigned index = if_nametoindex(interface_name.c_str());
    if (s < 0 || index == 0) {
      result = absl::FailedPreconditionError(
          absl::StrCat("cannot send on ", interface_name, " in ", netns, ": ", std::strerror(errno)));
      if (s >= 0) close(s);
      return;
    }
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_ARP);
    to.sll_ifindex = static_cast<int>(index);
    to.sll_halen = ETH_ALEN;
    std::memset(to.sll_addr, 0xff, ETH_ALEN);
    for (int round = 0; round < rounds; ++round) {
      if (round > 0) absl::SleepFor(absl::Milliseconds(100));
      for (const std::string& f : frames) {
        if (sendto(s, f.data(), f.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) < 0 && result.ok()) {
          result = absl::UnavailableError(absl::StrCat("cannot send on ", interface_name, ": ", std::strerror(errno)));
        }
      }
    }
    close(s);
  });
  sender.join();
  return result;
}

std::string NetworkCidr(const std::string& address, uint32_t prefix_length) {
  in_addr a;
  if (inet_pton(AF_INET, address.c_str(), &a) != 1 || prefix_length > 32) return "";
  uint32_t mask = prefix_length == 0 ? 0 : ~uint32_t{0} << (32 - prefix_length);
  return absl::StrCat(Dotted(ntohl(a.s_addr) & mask), "/", prefix_length);
}

std::string RenderNetworkConfig(const std::vector<PrivateNic>& nics) {
  if (nics.empty()) return "";
  std::string out =
      "version: 2\nethernets:\n  uplink:\n    match:\n      macaddress: \"52:54:00:12:34:56\"\n    dhcp4: true\n";
  for (size_t i = 0; i < nics.size(); ++i) {
    const PrivateNic& n = nics[i];
    absl::StrAppend(&out, "  private", i, ":\n    match:\n      macaddress: \"", n.mac, "\"\n    addresses:\n      - ",
                    n.address, "/", n.prefix_length, "\n");
  }
  return out;
}

void RemovePrivateNetworkScope(const std::string& scope, const CommandRunner& run) {
  const std::string prefix = RouterPrefix(scope);
  for (const std::string& ns : NamespacesWithPrefix(prefix)) RemoveRouter(run, scope, ns, ns.substr(prefix.size()));
  run({"nft", "delete", "table", "ip", TunnelTable(scope)}, "").IgnoreError();
}

PrivateNetworks::PrivateNetworks(std::string scope, CommandRunner run)
    : scope_(std::move(scope)), run_(std::move(run)) {}

std::string PrivateNetworks::RouterNamespace(const std::string& network_id) const {
  return RouterPrefix(scope_) + network_id;
}

std::string PrivateNetworks::RouterPort(const std::string& vm_id, const std::string& network_id) const {
  return "v" + Hash(absl::StrCat(scope_, "/", vm_id, "/", network_id), 5);
}

std::string PrivateNetworks::TapName(size_t index) { return absl::StrCat("pt", index); }

std::string PrivateNetworks::MacFor(const std::string& vm_id, const std::string& network_id) {
  std::string h = Hash(absl::StrCat(vm_id, "/", network_id), 5);
  // 0x02: locally administered, unicast.
  return absl::StrFormat("02:%s:%s:%s:%s:%s", h.substr(0, 2), h.substr(2, 2), h.substr(4, 2), h.substr(6, 2),
                         h.substr(8, 2));
}

std::string PrivateNetworks::RouterMac(const std::string& network_id) {
  // MacFor of an empty VM id, which no VM has: never a VM's MAC on the network.
  return MacFor("", network_id);
}

absl::Status PrivateNetworks::RunBatch(const std::string& netns, const std::string& name, const std::string& content) {
  std::string path = absl::StrCat("/run/ppn-priv-", Hash(scope_, 4), "-", name);
  PPN_RETURN_IF_ERROR(WriteFileAtomically(path, content, 0600));
  absl::StatusOr<std::string> out = run_({"ip", "-n", netns, "-batch", path}, "");
  std::remove(path.c_str());
  return out.status();
}

absl::Status PrivateNetworks::MakeRouterLocked(const std::string& network_id) {
  std::string ns = RouterNamespace(network_id);
  if (access(absl::StrCat("/run/netns/", ns).c_str(), F_OK) == 0) return absl::OkStatus();
  PPN_RETURN_IF_ERROR(run_({"ip", "netns", "add", ns}, "").status());
  absl::Status s = RunBatch(ns, "router",
                            absl::StrCat("link add ", kBridge, " address ", RouterMac(network_id),
                                         " type bridge\nlink set ", kBridge, " up\n"));
  if (!s.ok()) run_({"ip", "netns", "del", ns}, "").IgnoreError();
  return s;
}

absl::Status PrivateNetworks::Attach(const std::string& vm_id, const std::string& vm_netns,
                                     const std::vector<PrivateNic>& nics, const std::string& tap_user) {
  PPN_RETURN_IF_ERROR(ValidatePrivateNics(nics));
  absl::MutexLock l(&mu_);
  absl::Status s;
  for (size_t i = 0; i < nics.size() && s.ok(); ++i) {
    const std::string& net = nics[i].network_id;
    s = MakeRouterLocked(net);
    if (!s.ok()) break;
    std::string router = RouterNamespace(net);
    std::string port = RouterPort(vm_id, net);
    std::string tap = TapName(i), bridge = absl::StrCat("pb", i), veth = absl::StrCat("pe", i);
    // A leftover of this VM (an agent killed mid-attach) is replaced.
    run_({"ip", "-n", router, "link", "del", port}, "").IgnoreError();
    std::string vm =
        absl::StrCat("tuntap add dev ", tap, " mode tap", tap_user.empty() ? "" : " user ", tap_user, "\nlink add ",
                     bridge, " type bridge\nlink add ", veth, " type veth peer name ", port, " netns ", router,
                     "\nlink set ", tap, " master ", bridge, "\nlink set ", veth, " master ", bridge, "\nlink set ",
                     tap, " up\nlink set ", veth, " up\nlink set ", bridge, " up\n");
    s = RunBatch(vm_netns, absl::StrCat(port, ".vm"), vm);
    if (s.ok()) {
      s = RunBatch(router, absl::StrCat(port, ".r"),
                   absl::StrCat("link set ", port, " master ", kBridge, "\nlink set ", port, " up\n"));
    }
    if (!s.ok()) {
      s = absl::Status(s.code(),
                       absl::StrCat("cannot attach vm ", vm_id, " to private network ", net, ": ", s.message()));
    }
  }
  if (!s.ok()) {
    for (size_t i = 0; i < nics.size(); ++i) {
      run_({"ip", "-n", vm_netns, "link", "del", TapName(i)}, "").IgnoreError();
      run_({"ip", "-n", vm_netns, "link", "del", absl::StrCat("pb", i)}, "").IgnoreError();
      run_({"ip", "-n", RouterNamespace(nics[i].network_id), "link", "del", RouterPort(vm_id, nics[i].network_id)}, "")
          .IgnoreError();
      RemoveRouterIfIdleLocked(nics[i].network_id);
    }
  }
  return s;
}

void PrivateNetworks::Detach(const std::string& vm_id, const std::vector<PrivateNic>& nics) {
  absl::MutexLock l(&mu_);
  for (const PrivateNic& n : nics) {
    std::string router = RouterNamespace(n.network_id);
    if (access(absl::StrCat("/run/netns/", router).c_str(), F_OK) != 0) continue;
    // Not left to the VM namespace's removal, which the kernel finishes later.
    run_({"ip", "-n", router, "link", "del", RouterPort(vm_id, n.network_id)}, "").IgnoreError();
    RemoveRouterIfIdleLocked(n.network_id);
  }
}

void PrivateNetworks::RemoveRouterIfIdleLocked(const std::string& network_id) {
  std::string router = RouterNamespace(network_id);
  if (access(absl::StrCat("/run/netns/", router).c_str(), F_OK) != 0) return;
  if (!RouterPorts(network_id).empty()) return;
  RemoveRouterLocked(network_id);
}

void PrivateNetworks::RemoveRouterLocked(const std::string& network_id) {
  RemoveRouter(run_, scope_, RouterNamespace(network_id), network_id);
  auto it = tunnels_.find(network_id);
  if (it != tunnels_.end()) {
    TunnelOptions options = it->second.options;
    std::remove(absl::StrCat(options.keys_dir, "/", network_id, ".key").c_str());
    tunnels_.erase(it);
    if (!absl::StartsWith(options.mesh_address, "127.")) ApplyForwardsLocked(options).IgnoreError();
  }
}

absl::Status PrivateNetworks::ApplyForwardsLocked(const TunnelOptions& options) {
  std::vector<std::string> elements;
  DIR* dir = opendir(kUplinkClaims);
  if (dir != nullptr) {
    while (dirent* d = readdir(dir)) {
      uint32_t index;
      if (!absl::SimpleAtoi(d->d_name, &index) || index >= kUplinks) continue;
      std::string owner(absl::StripAsciiWhitespace(ReadFile(absl::StrCat(kUplinkClaims, "/", d->d_name)).value_or("")));
      if (!absl::StartsWith(owner, scope_ + " ")) continue;
      elements.push_back(
          absl::StrCat(uint32_t{options.first_port} + index, " : ", Dotted(kUplinkBase + index * 4 + 2)));
    }
    closedir(dir);
  }
  const std::string t = TunnelTable(scope_);
  std::string nft = absl::StrCat("table ip ", t, " {}\ndelete table ip ", t, "\ntable ip ", t, " {\n",
                                 "  map tunnels { type inet_service : ipv4_addr;");
  if (!elements.empty()) absl::StrAppend(&nft, " elements = { ", absl::StrJoin(elements, ", "), " };");
  absl::StrAppend(&nft, " }\n", "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n",
                  "    ip daddr ", options.mesh_address, " dnat to udp dport map @tunnels\n  }\n",
                  "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
                  "    ip saddr 10.215.0.0/16 oifname != \"pu*\" masquerade\n  }\n}\n");
  std::string path = absl::StrCat("/run/ppn-priv-", Hash(scope_, 4), "-tunnels.nft");
  PPN_RETURN_IF_ERROR(WriteFileAtomically(path, nft, 0600));
  absl::Status s = run_({"nft", "-f", path}, "").status();
  std::remove(path.c_str());
  return s;
}

std::vector<std::string> PrivateNetworks::RouterPorts(const std::string& network_id) const {
  std::vector<std::string> out;
  absl::StatusOr<std::string> text = run_({"ip", "-n", RouterNamespace(network_id), "-j", "link", "show"}, "");
  if (!text.ok()) return out;
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return out;
  for (const auto& link : j) {
    std::string name = link.value("ifname", "");
    if (name == "lo" || name == kBridge || name.empty() || name == kUplink || name == TunnelInterface(network_id)) {
      continue;
    }
    out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string PrivateNetworks::TunnelInterface(const std::string& network_id) const {
  return TunnelName(scope_, network_id);
}

absl::StatusOr<NetworkTunnel> PrivateNetworks::Tunnel(const std::string& network_id, const std::string& cidr,
                                                      const TunnelOptions& options) {
  absl::MutexLock l(&mu_);
  const std::string ns = RouterNamespace(network_id);
  if (access(absl::StrCat("/run/netns/", ns).c_str(), F_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("private network ", network_id, " has no VM on this node"));
  }
  in_addr mesh;
  if (inet_pton(AF_INET, options.mesh_address.c_str(), &mesh) != 1) {
    return absl::InvalidArgumentError("the tunnel's mesh address must be IPv4");
  }
  const bool loopback = absl::StartsWith(options.mesh_address, "127.");
  PPN_ASSIGN_OR_RETURN(uint32_t index, ClaimUplink(absl::StrCat(scope_, " ", network_id)));
  const uint32_t port = uint32_t{options.first_port} + index;
  if (port > 65535) return absl::ResourceExhaustedError("no tunnel port is left on this host");
  const std::string host_ip = Dotted(kUplinkBase + index * 4 + 1), up_ip = Dotted(kUplinkBase + index * 4 + 2);
  const std::string wg = TunnelInterface(network_id), uplink = UplinkName(scope_, network_id);
  std::error_code ec;
  std::filesystem::create_directories(options.keys_dir, ec);
  const std::string key_file = absl::StrCat(options.keys_dir, "/", network_id, ".key");
  PPN_ASSIGN_OR_RETURN(mesh::WireGuardKeyPair key, mesh::LoadOrCreatePrivateKeyFile(key_file));
  auto made = [&]() -> absl::Status {
    // Each step is idempotent: a restarted agent takes over a tunnel its predecessor made.
    if (!run_({"ip", "link", "show", uplink}, "").ok()) {
      PPN_RETURN_IF_ERROR(
          run_({"ip", "link", "add", uplink, "type", "veth", "peer", "name", kUplink, "netns", ns}, "").status());
    }
    PPN_RETURN_IF_ERROR(run_({"ip", "addr", "replace", host_ip + "/30", "dev", uplink}, "").status());
    PPN_RETURN_IF_ERROR(run_({"ip", "link", "set", uplink, "up"}, "").status());
    PPN_RETURN_IF_ERROR(RunBatch(
        ns, absl::StrCat(uplink, ".up"),
        absl::StrCat("addr replace ", up_ip, "/30 dev ", kUplink, "\nlink set ", kUplink,
                     " up\nlink set lo up\nlink set ", kBridge, " address ", RouterMac(network_id),
                     "\nroute replace default via ", host_ip, "\nroute replace ", cidr, " dev ", kBridge, "\n")));
    // Routing between the bridge and the tunnel, and ARP answers for the other nodes' VMs.
    PPN_RETURN_IF_ERROR(
        run_({"sysctl", "-qw", "net.ipv4.ip_forward=1", absl::StrCat("net.ipv4.conf.", kBridge, ".proxy_arp=1")}, ns)
            .status());
    if (!run_({"ip", "link", "show", wg}, ns).ok()) PPN_RETURN_IF_ERROR(run_({options.wireguard_go, wg}, ns).status());
    PPN_RETURN_IF_ERROR(
        run_({"wg", "set", wg, "listen-port", absl::StrCat(port), "private-key", key_file}, ns).status());
    // The tunnel's packets must fit the path to the other nodes whole: over the mesh's own
    // WireGuard (MTU 1420) a 1420-byte tunnel MTU would make every full-sized packet too big.
    const uint32_t mtu = TunnelMtu(run_, options.mesh_address);
    PPN_RETURN_IF_ERROR(run_({"ip", "link", "set", wg, "mtu", absl::StrCat(mtu), "up"}, ns).status());
    // The router forwards only between its bridge and its tunnel, and its uplink carries
    // nothing but the tunnel's own UDP.
    std::string nft = absl::StrCat(
        "table inet ppnr {}\ndelete table inet ppnr\ntable inet ppnr {\n",
        "  chain input {\n    type filter hook input priority filter; policy drop;\n    iif lo accept\n",
        "    iifname \"", kUplink, "\" udp dport ", port, " accept\n  }\n",
        "  chain output {\n    type filter hook output priority filter; policy drop;\n    oif lo accept\n",
        "    oifname \"", kUplink, "\" udp sport ", port, " accept\n",
        // "Too big" back to a guest whose packet does not fit the tunnel.
        "    oifname \"", kBridge, "\" icmp type destination-unreachable accept\n  }\n",
        "  chain forward {\n    type filter hook forward priority filter; policy drop;\n",
        // TCP's segments sized to the tunnel at the handshake, whatever the guests
        // think of their 1500-byte link (a router has no address to send them
        // "too big" from that every guest would accept).
        "    oifname \"", wg, "\" tcp flags syn tcp option maxseg size set rt mtu\n", "    iifname \"", wg,
        "\" tcp flags syn tcp option maxseg size set rt mtu\n", "    iifname \"", kBridge, "\" oifname { \"", kBridge,
        "\", \"", wg, "\" } accept\n", "    iifname \"", wg, "\" oifname \"", kBridge, "\" accept\n  }\n}\n");
    std::string path = absl::StrCat("/run/ppn-priv-", Hash(scope_, 4), "-", uplink, ".nft");
    PPN_RETURN_IF_ERROR(WriteFileAtomically(path, nft, 0600));
    absl::Status applied = run_({"nft", "-f", path}, ns).status();
    std::remove(path.c_str());
    PPN_RETURN_IF_ERROR(applied);
    // Docker's FORWARD policy drops what crosses the node between two routers' uplinks.
    if (run_({"iptables", "-S", "DOCKER-USER"}, "").ok()) {
      for (const char* dir : {"-s", "-d"}) {
        std::vector<std::string> rule = {"DOCKER-USER", dir, "10.215.0.0/16", "-j", "ACCEPT"};
        std::vector<std::string> check = {"iptables", "-C"}, insert = {"iptables", "-I"};
        check.insert(check.end(), rule.begin(), rule.end());
        insert.insert(insert.end(), rule.begin(), rule.end());
        if (!run_(check, "").ok()) PPN_RETURN_IF_ERROR(run_(insert, "").status());
      }
    }
    if (!loopback) PPN_RETURN_IF_ERROR(ApplyForwardsLocked(options));
    return absl::OkStatus();
  };
  absl::Status s = made();
  if (!s.ok()) {
    StopTunnel(run_, ns, wg);
    run_({"ip", "link", "del", uplink}, "").IgnoreError();
    ReleaseUplink(absl::StrCat(scope_, " ", network_id));
    return absl::Status(s.code(),
                        absl::StrCat("cannot make the tunnel of private network ", network_id, ": ", s.message()));
  }
  NetworkTunnel tunnel{network_id, wg, key.public_key,
                       absl::StrCat(loopback ? up_ip : options.mesh_address, ":", port)};
  if (tunnels_.count(network_id) == 0) {
    // Taken over from an agent before this one, whose bridge may have had another MAC: the
    // guests' entries for the remote VMs point at it. (A new router has no routes yet.)
    AnnounceAddresses(ns, kBridge, RouterMac(network_id), TunnelRoutesLocked(network_id), 1).IgnoreError();
  }
  TunnelState& state = tunnels_[network_id];
  state.options = options;
  state.tunnel = tunnel;
  return tunnel;
}

std::vector<std::pair<NetworkTunnel, std::string>> PrivateNetworks::Tunnels() {
  absl::MutexLock l(&mu_);
  std::vector<std::pair<NetworkTunnel, std::string>> out;
  for (const auto& [id, t] : tunnels_) out.emplace_back(t.tunnel, t.fingerprint);
  return out;
}

absl::Status PrivateNetworks::SetPeers(const std::string& network_id, const std::vector<NetworkPeer>& peers,
                                       const std::string& fingerprint) {
  std::set<std::string> keys, addresses;
  std::vector<std::vector<std::string>> sets;
  for (const NetworkPeer& p : peers) {
    if (!mesh::IsWireGuardKey(p.public_key) || !keys.insert(p.public_key).second) {
      return absl::InvalidArgumentError("a peer's public key is not a WireGuard key, or is named twice");
    }
    std::vector<std::string> hostport = absl::StrSplit(p.endpoint, absl::MaxSplits(':', 1));
    in_addr a;
    uint32_t port = 0;
    if (hostport.size() != 2 || inet_pton(AF_INET, hostport[0].c_str(), &a) != 1 ||
        !absl::SimpleAtoi(hostport[1], &port) || port == 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer endpoint \"", p.endpoint.substr(0, 64), "\" must be IPV4:PORT"));
    }
    std::vector<std::string> allowed;
    for (const std::string& addr : p.addresses) {
      if (inet_pton(AF_INET, addr.c_str(), &a) != 1 || !addresses.insert(addr).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("peer address \"", addr.substr(0, 64), "\" is not IPv4 or is named twice"));
      }
      allowed.push_back(addr + "/32");
    }
    std::vector<std::string> set = {"wg",
                                    "set",
                                    "",
                                    "peer",
                                    p.public_key,
                                    "endpoint",
                                    p.endpoint,
                                    "persistent-keepalive",
                                    "25",
                                    "allowed-ips",
                                    absl::StrJoin(allowed, ",")};
    sets.push_back(std::move(set));
  }
  absl::MutexLock l(&mu_);
  const std::string ns = RouterNamespace(network_id), wg = TunnelInterface(network_id);
  if (!run_({"ip", "link", "show", wg}, ns).ok()) {
    return absl::FailedPreconditionError(absl::StrCat("private network ", network_id, " has no tunnel on this node"));
  }
  PPN_ASSIGN_OR_RETURN(std::string current, run_({"wg", "show", wg, "peers"}, ns));
  for (absl::string_view k : absl::StrSplit(current, '\n', absl::SkipWhitespace())) {
    std::string key(absl::StripAsciiWhitespace(k));
    if (keys.count(key) == 0) PPN_RETURN_IF_ERROR(run_({"wg", "set", wg, "peer", key, "remove"}, ns).status());
  }
  for (std::vector<std::string>& set : sets) {
    set[2] = wg;
    PPN_RETURN_IF_ERROR(run_(set, ns).status());
  }
  // Each remote VM's /32 through the tunnel; routes of VMs that left go.
  std::vector<std::string> routed = TunnelRoutesLocked(network_id), arrived;
  for (const std::string& dst : routed) {
    if (addresses.count(dst) == 0) run_({"ip", "route", "del", dst, "dev", wg}, ns).IgnoreError();
  }
  for (const std::string& addr : addresses) {
    PPN_RETURN_IF_ERROR(run_({"ip", "route", "replace", addr + "/32", "dev", wg}, ns).status());
    if (std::find(routed.begin(), routed.end(), addr) == routed.end()) arrived.push_back(addr);
  }
  if (auto it = tunnels_.find(network_id); it != tunnels_.end()) it->second.fingerprint = fingerprint;
  // Best effort: a guest that misses it still finds the router once its entry times out.
  AnnounceAddresses(ns, kBridge, RouterMac(network_id), arrived).IgnoreError();
  return absl::OkStatus();
}

std::vector<std::string> PrivateNetworks::TunnelRoutesLocked(const std::string& network_id) {
  std::vector<std::string> out;
  absl::StatusOr<std::string> routes =
      run_({"ip", "-j", "route", "show", "dev", TunnelInterface(network_id)}, RouterNamespace(network_id));
  if (!routes.ok()) return out;
  nlohmann::json j = nlohmann::json::parse(*routes, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return out;
  for (const auto& r : j) {
    std::string dst = r.value("dst", "");
    if (absl::EndsWith(dst, "/32")) dst.resize(dst.size() - 3);
    if (!dst.empty()) out.push_back(dst);
  }
  return out;
}

void PrivateNetworks::Activate(const std::vector<PrivateNic>& nics) {
  for (const PrivateNic& n : nics) {
    std::vector<std::string> remote;
    const std::string ns = RouterNamespace(n.network_id);
    {
      absl::MutexLock l(&mu_);
      if (access(absl::StrCat("/run/netns/", ns).c_str(), F_OK) != 0) continue;
      // Its own address may still be routed to the node it left until the fleet hands this
      // node its new peers; the guest announces that one itself (virtio-net after migration).
      for (const std::string& dst : TunnelRoutesLocked(n.network_id)) {
        if (dst != n.address) remote.push_back(dst);
      }
    }
    AnnounceAddresses(ns, kBridge, RouterMac(n.network_id), remote).IgnoreError();
  }
}

std::vector<std::string> PrivateNetworks::ListRouters() const { return NamespacesWithPrefix(RouterPrefix(scope_)); }

std::vector<std::string> PrivateNetworks::Sweep(const std::map<std::string, std::set<std::string>>& live) {
  absl::MutexLock l(&mu_);
  std::vector<std::string> removed;
  const std::string prefix = RouterPrefix(scope_);
  for (const std::string& ns : ListRouters()) {
    std::string net = ns.substr(prefix.size());
    auto it = live.find(net);
    if (it == live.end()) {
      RemoveRouterLocked(net);
      removed.push_back(ns);
      continue;
    }
    std::set<std::string> keep;
    for (const std::string& vm : it->second) keep.insert(RouterPort(vm, net));
    for (const std::string& port : RouterPorts(net)) {
      if (keep.count(port) != 0) continue;
      run_({"ip", "-n", ns, "link", "del", port}, "").IgnoreError();
      removed.push_back(absl::StrCat(ns, "/", port));
    }
  }
  return removed;
}

}  // namespace ppn::host
