#include "host_agent/vm_network.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <net/route.h>
#include <openssl/sha.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "host_agent/private_network.h"
#include "nlohmann/json.hpp"

namespace ppn::host {
namespace {

// Every VM link of every agent on this host lies here, so a namespace can never reach another
// agent's VMs either (tools/ppn runs three agents on one machine).
constexpr char kLinkPool[] = "10.213.0.0/16";
constexpr int kMaxRules = 64;

// A dotted IPv4 address or CIDR → network address and prefix length.
bool ParseCidr(absl::string_view text, uint32_t* addr, int* prefix) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits('/', 1));
  in_addr a;
  if (parts.empty() || inet_pton(AF_INET, parts[0].c_str(), &a) != 1) return false;
  *prefix = 32;
  // Digits only (SimpleAtoi alone takes "32\n", which would end a rule early in the nft file).
  if (parts.size() == 2) {
    const std::string& p = parts[1];
    if (p.empty() || p.size() > 2 || !absl::c_all_of(p, [](char c) { return c >= '0' && c <= '9'; }) ||
        !absl::SimpleAtoi(p, prefix) || *prefix > 32) {
      return false;
    }
  }
  *addr = ntohl(a.s_addr);
  return true;
}

std::string Dotted(uint32_t host_order) {
  in_addr a;
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

// nft identifiers may not hold '-'.
std::string NftName(absl::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return out;
}

std::string ShortHash(absl::string_view s) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), 5));
}

std::string Elements(const std::vector<std::string>& items) { return absl::StrJoin(items, ", "); }

std::string RuleMatch(const EgressRule& r) {
  // The canonical form, never the tenant's text (validated before this, parsed again here).
  uint32_t addr = 0;
  int prefix = 32;
  ParseCidr(r.cidr, &addr, &prefix);
  std::string m = absl::StrCat("ip daddr ", Dotted(addr), prefix == 32 ? "" : absl::StrCat("/", prefix));
  if (r.port_first != 0) {
    absl::StrAppend(&m, " ", r.udp ? "udp" : "tcp", " dport ", r.port_first);
    if (r.port_last > r.port_first) absl::StrAppend(&m, "-", r.port_last);
  }
  return m;
}

absl::Status ValidateRules(const std::vector<EgressRule>& rules, const char* field) {
  if (rules.size() > kMaxRules) return absl::InvalidArgumentError(absl::StrCat(field, " may hold at most 64 rules"));
  for (const EgressRule& r : rules) {
    uint32_t addr;
    int prefix;
    if (!ParseCidr(r.cidr, &addr, &prefix)) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": \"", r.cidr.substr(0, 64), "\" is not an IPv4 CIDR"));
    }
    if (r.port_first == 0 && r.port_last != 0) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": port_last without port_first"));
    }
    if (r.port_first > 65535 || r.port_last > 65535 || (r.port_last != 0 && r.port_last < r.port_first)) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ports must be 1-65535 with first <= last"));
    }
  }
  return absl::OkStatus();
}

// Runs `fn` on a thread of its own inside network namespace `netns` (empty: this one), so no
// other thread of the agent ever changes namespace.
absl::Status InNamespace(const std::string& netns, const std::function<absl::Status()>& fn) {
  absl::Status result;
  std::thread t([&] {
    if (!netns.empty()) {
      int fd = open(absl::StrCat("/run/netns/", netns).c_str(), O_RDONLY | O_CLOEXEC);
      bool entered = fd >= 0 && setns(fd, CLONE_NEWNET) == 0;
      int err = errno;
      if (fd >= 0) close(fd);
      if (!entered) {
        result = absl::FailedPreconditionError(
            absl::StrCat("cannot enter network namespace ", netns, ": ", std::strerror(err)));
        return;
      }
    }
    result = fn();
  });
  t.join();
  return result;
}

// nftables' own library (what `nft -f` runs), loaded at run time: Debian's nftables package
// brings libnftables1 but no headers, and a script applied in-process costs no process start
// (most of a VM network's setup time; BENCHMARKS.md). Declared here as libnftables.h does.
struct Nftables {
  using New = void* (*)(uint32_t);
  using Free = void (*)(void*);
  using Buffer = int (*)(void*);
  using GetError = const char* (*)(void*);
  using Run = int (*)(void*, const char*);
  New ctx_new = nullptr;
  Free ctx_free = nullptr;
  Buffer buffer_error = nullptr, buffer_output = nullptr;
  GetError get_error = nullptr;
  Run run = nullptr;
  absl::Mutex mu;  // the library's parser is not known to be thread-safe

  static Nftables* Get() {
    static Nftables* nft = [] {
      void* lib = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
      if (lib == nullptr) return static_cast<Nftables*>(nullptr);
      auto* n = new Nftables;
      n->ctx_new = reinterpret_cast<New>(dlsym(lib, "nft_ctx_new"));
      n->ctx_free = reinterpret_cast<Free>(dlsym(lib, "nft_ctx_free"));
      n->buffer_error = reinterpret_cast<Buffer>(dlsym(lib, "nft_ctx_buffer_error"));
      n->buffer_output = reinterpret_cast<Buffer>(dlsym(lib, "nft_ctx_buffer_output"));
      n->get_error = reinterpret_cast<GetError>(dlsym(lib, "nft_ctx_get_error_buffer"));
      n->run = reinterpret_cast<Run>(dlsym(lib, "nft_run_cmd_from_buffer"));
      if (!n->ctx_new || !n->ctx_free || !n->buffer_error || !n->buffer_output || !n->get_error || !n->run) {
        delete n;
        return static_cast<Nftables*>(nullptr);
      }
      return n;
    }();
    return nft;
  }

  // Applies `script` (one transaction, as `nft -f`) in the calling thread's namespace.
  absl::Status Apply(const std::string& script) {
    absl::MutexLock l(&mu);
    void* ctx = ctx_new(0);
    if (ctx == nullptr) return absl::InternalError("nft: cannot make a context");
    buffer_error(ctx);
    buffer_output(ctx);
    int rc = run(ctx, script.c_str());
    std::string error = rc == 0 ? "" : std::string(get_error(ctx));
    ctx_free(ctx);
    if (rc != 0) return absl::InternalError(absl::StrCat("nft: ", error));
    return absl::OkStatus();
  }
};

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat("cannot ", what, ": ", std::strerror(errno)));
}

// `ifname` up with `address`/30 and, when `gateway` is set, the default route through it;
// `lo` up too. ioctls, in the calling thread's namespace.
absl::Status ConfigureLink(const std::string& ifname, const std::string& address, const std::string& gateway) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return Errno("open a socket");
  auto fail = [&](const std::string& what) {
    absl::Status e = Errno(what);
    close(s);
    return e;
  };
  auto set_address = [](sockaddr* sa, const std::string& dotted) {
    auto* sin = reinterpret_cast<sockaddr_in*>(sa);
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, dotted.c_str(), &sin->sin_addr);
  };
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  set_address(&ifr.ifr_addr, address);
  if (ioctl(s, SIOCSIFADDR, &ifr) != 0) return fail("set the address of " + ifname);
  set_address(&ifr.ifr_addr, "255.255.255.252");
  if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) return fail("set the netmask of " + ifname);
  std::vector<std::string> up = {ifname};
  if (!gateway.empty()) up.push_back("lo");
  for (const std::string& name : up) {
    ifreq f{};
    std::strncpy(f.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFFLAGS, &f) != 0) return fail("read the flags of " + name);
    f.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &f) != 0) return fail("bring up " + name);
  }
  if (!gateway.empty()) {
    rtentry rt{};
    reinterpret_cast<sockaddr_in*>(&rt.rt_dst)->sin_family = AF_INET;
    reinterpret_cast<sockaddr_in*>(&rt.rt_genmask)->sin_family = AF_INET;
    set_address(&rt.rt_gateway, gateway);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    std::string dev = ifname;
    rt.rt_dev = dev.data();
    if (ioctl(s, SIOCADDRT, &rt) != 0) return fail("add the default route via " + gateway);
  }
  close(s);
  return absl::OkStatus();
}

// What `ip netns add` does: /run/netns a shared mount of its own (so a namespace bound there is
// seen from every mount namespace, and `ip netns del` can unmount it), then a new namespace's
// handle bind-mounted on /run/netns/<name>, from a thread that leaves with it.
absl::Status MakeNamedNamespace(const std::string& name) {
  if (mkdir("/run/netns", 0755) != 0 && errno != EEXIST) return Errno("make /run/netns");
  if (mount("", "/run/netns", "none", MS_SHARED | MS_REC, nullptr) != 0) {
    if (errno != EINVAL) return Errno("share /run/netns");
    if (mount("/run/netns", "/run/netns", "none", MS_BIND | MS_REC, nullptr) != 0) return Errno("bind /run/netns");
    if (mount("", "/run/netns", "none", MS_SHARED | MS_REC, nullptr) != 0) return Errno("share /run/netns");
  }
  const std::string path = "/run/netns/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) return Errno("create " + path);
  close(fd);
  absl::Status result;
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      result = Errno("make a network namespace");
    } else if (mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      result = Errno("bind the namespace on " + path);
    }
  });
  t.join();
  if (!result.ok()) unlink(path.c_str());
  return result;
}

// A netlink request being built: attributes appended, nests closed by length.
class NetlinkRequest {
 public:
  NetlinkRequest(uint16_t type, uint16_t flags, const void* header, size_t header_len) {
    h()->nlmsg_type = type;
    h()->nlmsg_flags = flags;
    h()->nlmsg_len = NLMSG_LENGTH(header_len);
    std::memcpy(NLMSG_DATA(h()), header, header_len);
  }
  void Add(uint16_t type, const void* data, size_t len) {
    auto* a = reinterpret_cast<rtattr*>(buf_ + NLMSG_ALIGN(h()->nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(len);
    if (len != 0) std::memcpy(RTA_DATA(a), data, len);
    h()->nlmsg_len = NLMSG_ALIGN(h()->nlmsg_len) + RTA_ALIGN(a->rta_len);
  }
  void AddString(uint16_t type, const std::string& v) { Add(type, v.c_str(), v.size() + 1); }
  void AddRaw(const void* data, size_t len) {
    std::memcpy(buf_ + NLMSG_ALIGN(h()->nlmsg_len), data, len);
    h()->nlmsg_len = NLMSG_ALIGN(h()->nlmsg_len) + NLMSG_ALIGN(len);
  }
  size_t Begin(uint16_t type) {
    size_t at = NLMSG_ALIGN(h()->nlmsg_len);
    Add(type, nullptr, 0);
    return at;
  }
  void End(size_t at) { reinterpret_cast<rtattr*>(buf_ + at)->rta_len = h()->nlmsg_len - at; }
  // Sends the request and reads the kernel's answer.
  absl::Status Run(absl::string_view what) {
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0) return Errno("open a netlink socket");
    h()->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    absl::Status result;
    if (sendto(s, buf_, h()->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
      result = Errno(what);
    } else {
      alignas(nlmsghdr) char answer[1024];
      ssize_t n = recv(s, answer, sizeof answer, 0);
      auto* r = reinterpret_cast<nlmsghdr*>(answer);
      if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr))) || r->nlmsg_type != NLMSG_ERROR) {
        result = absl::InternalError(absl::StrCat("cannot ", what, ": no answer from the kernel"));
      } else if (int err = reinterpret_cast<nlmsgerr*>(NLMSG_DATA(r))->error; err != 0) {
        errno = -err;
        result = Errno(what);
      }
    }
    close(s);
    return result;
  }

 private:
  nlmsghdr* h() { return reinterpret_cast<nlmsghdr*>(buf_); }
  alignas(nlmsghdr) char buf_[1024] = {};
};

// A VM's namespace, its veth pair and both ends' addresses, without a process: `ip -batch`'s
// and `ip -n ... -batch`'s work by mount, netlink and ioctls.
absl::Status MakeLinkInProcess(const VmLink& link) {
  PPN_RETURN_IF_ERROR(MakeNamedNamespace(link.netns));
  int ns = open(("/run/netns/" + link.netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) return Errno("open /run/netns/" + link.netns);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  NetlinkRequest req(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof ifi);
  req.AddString(IFLA_IFNAME, link.host_if);
  size_t info = req.Begin(IFLA_LINKINFO);
  req.AddString(IFLA_INFO_KIND, "veth");
  size_t data = req.Begin(IFLA_INFO_DATA);
  size_t peer = req.Begin(VETH_INFO_PEER);
  req.AddRaw(&ifi, sizeof ifi);
  req.AddString(IFLA_IFNAME, "eth0");
  uint32_t fd = static_cast<uint32_t>(ns);
  req.Add(IFLA_NET_NS_FD, &fd, sizeof fd);
  req.End(peer);
  req.End(data);
  req.End(info);
  absl::Status s = req.Run("make veth " + link.host_if);
  close(ns);
  PPN_RETURN_IF_ERROR(s);
  PPN_RETURN_IF_ERROR(ConfigureLink(link.host_if, link.host_ip, ""));
  return InNamespace(link.netns, [&] { return ConfigureLink("eth0", link.netns_ip, link.host_ip); });
}

}  // namespace

absl::Status ValidateEgressPolicy(const EgressPolicy& policy) {
  PPN_RETURN_IF_ERROR(ValidateRules(policy.allow, "egress allow"));
  PPN_RETURN_IF_ERROR(ValidateRules(policy.deny, "egress deny"));
  if (policy.rate_limit_kbit > 10 * 1000 * 1000) {
    return absl::InvalidArgumentError("egress rate_limit_kbit must be below 10000000 (10 Gbit/s)");
  }
  return absl::OkStatus();
}

void ParseNodeAddresses(const std::string& ip_json, std::vector<std::string>* addresses,
                        std::vector<std::string>* subnets) {
  nlohmann::json j = nlohmann::json::parse(ip_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return;
  for (const auto& iface : j) {
    for (const auto& a : iface.value("addr_info", nlohmann::json::array())) {
      if (a.value("family", "") != "inet") continue;
      std::string local = a.value("local", "");
      int prefix = a.value("prefixlen", 32);
      uint32_t addr;
      int ignored;
      if (!ParseCidr(local, &addr, &ignored)) continue;
      addresses->push_back(local);
      if (prefix > 0 && prefix < 32 && !absl::StartsWith(local, "127.")) {
        uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
        subnets->push_back(absl::StrCat(Dotted(addr & mask), "/", prefix));
      }
    }
  }
}

std::string NetworkScope(const std::string& node_id, const std::string& state_dir) {
  std::string abs = std::filesystem::absolute(state_dir).lexically_normal().string();
  return absl::StrCat(node_id, "-", ShortHash(abs).substr(0, 4));
}

void RemoveNetworkScope(const std::string& scope, const CommandRunner& run, const std::string& claims_dir) {
  NetworkOptions o;
  o.node_id = scope;
  o.scope = scope;
  o.claims_dir = claims_dir;
  VmNetwork net(o, run);
  for (const std::string& ns : net.ListNamespaces()) run({"ip", "netns", "del", ns}, "").IgnoreError();
  DIR* dir = opendir(claims_dir.c_str());
  if (dir != nullptr) {
    while (dirent* d = readdir(dir)) {
      std::string path = absl::StrCat(claims_dir, "/", d->d_name);
      absl::StatusOr<std::string> owner = ReadFile(path);
      if (owner.ok() && absl::StartsWith(*owner, scope + " ")) unlink(path.c_str());
    }
    closedir(dir);
  }
  run({"nft", "delete", "table", "ip", net.NodeTableName()}, "").IgnoreError();
  RemovePrivateNetworkScope(scope, run);
}

absl::StatusOr<NetworkOptions> DiscoverNetworkOptions(const std::string& node_id, const std::string& mesh_address,
                                                      const std::vector<std::string>& extra_lan_ranges,
                                                      const CommandRunner& run) {
  NetworkOptions o;
  o.node_id = node_id;
  o.mesh_address = mesh_address;
  for (const std::string& r : extra_lan_ranges) {
    uint32_t addr;
    int prefix;
    if (!ParseCidr(r, &addr, &prefix)) {
      return absl::InvalidArgumentError(absl::StrCat("--lan_ranges: \"", r, "\" is not an IPv4 CIDR"));
    }
    o.lan_ranges.push_back(r);
  }
  absl::StatusOr<std::string> ip = run({"ip", "-j", "addr"}, "");
  if (!ip.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot list the node's addresses: ", ip.status().message()));
  }
  ParseNodeAddresses(*ip, &o.node_addresses, &o.lan_ranges);
  // The link pool's own addresses are not the node's LAN: its rules name the pool already.
  uint32_t pool, host;
  int pool_prefix, p;
  ParseCidr(o.link_range, &pool, &pool_prefix);
  uint32_t mask = ~uint32_t{0} << (32 - pool_prefix);
  auto in_pool = [&](const std::string& a) { return ParseCidr(a, &host, &p) && (host & mask) == (pool & mask); };
  o.node_addresses.erase(std::remove_if(o.node_addresses.begin(), o.node_addresses.end(), in_pool),
                         o.node_addresses.end());
  o.lan_ranges.erase(std::remove_if(o.lan_ranges.begin(), o.lan_ranges.end(), in_pool), o.lan_ranges.end());
  o.dns_servers = ParseNameservers(ReadFile("/etc/resolv.conf").value_or(""));
  return o;
}

std::vector<std::string> ParseNameservers(const std::string& resolv_conf) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(resolv_conf, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    uint32_t addr;
    int prefix;
    if (f.size() >= 2 && f[0] == "nameserver" && ParseCidr(f[1], &addr, &prefix) && (addr >> 24) != 127) {
      out.push_back(f[1]);
    }
  }
  return out;
}

VmNetwork::VmNetwork(NetworkOptions options, CommandRunner run)
    : options_(std::move(options)), run_(std::move(run)), private_(Scope(), run_) {
  if (!ParseCidr(options_.link_range, &base_, &prefix_)) {
    base_ = 0;
    prefix_ = 32;
  }
  uint32_t mask = prefix_ == 0 ? 0 : ~uint32_t{0} << (32 - prefix_);
  base_ &= mask;
}

uint32_t VmNetwork::Capacity() const { return prefix_ >= 30 ? 0 : uint32_t{1} << (30 - prefix_); }

std::string VmNetwork::VmIdOf(const VmLink& link) const { return link.netns.substr(NamespacePrefix().size()); }

std::string VmNetwork::NamespacePrefix() const { return absl::StrCat("ppn.", Scope(), "."); }

std::string VmNetwork::NodeTableName() const { return "ppn_" + NftName(Scope()); }

std::string VmNetwork::Scope() const { return options_.scope.empty() ? options_.node_id : options_.scope; }

absl::StatusOr<VmLink> VmNetwork::LinkFor(const std::string& vm_id, uint32_t index) const {
  if (index >= Capacity()) {
    return absl::InvalidArgumentError(absl::StrCat("link index ", index, " does not fit ", options_.link_range));
  }
  VmLink link;
  link.index = index;
  link.netns = absl::StrCat(NamespacePrefix(), vm_id);
  // Interface names hold 15 characters: a hash keeps VMs of every agent on the host apart.
  link.host_if = "pv" + ShortHash(absl::StrCat(Scope(), "/", vm_id));
  uint32_t net = base_ + index * 4;
  link.host_ip = Dotted(net + 1);
  link.netns_ip = Dotted(net + 2);
  return link;
}

std::string VmNetwork::RenderNodeTable(const std::vector<std::pair<VmLink, std::vector<PortForwardRule>>>& live) const {
  const std::string t = NodeTableName();
  const std::string& link = options_.link_range;
  std::vector<std::string> tcp, udp;
  for (const auto& [l, forwards] : live) {
    for (const PortForwardRule& f : forwards)
      (f.udp ? udp : tcp).push_back(absl::StrCat(f.host_port, " : ", l.netns_ip));
  }
  // What no VM of any agent may reach is dropped for the whole link pool; the LAN ranges this
  // agent found only for its own VMs: every agent's table sees every agent's namespaces, and
  // another agent's (or a dead one's) idea of the LAN must not cut this one's guests off.
  std::vector<std::string> denied = {"127.0.0.0/8", "169.254.0.0/16", options_.mesh_range, kLinkPool};
  std::vector<std::string> lan = options_.lan_ranges, own;
  for (const auto& [l, forwards] : live) own.push_back(l.netns_ip);
  auto map = [](const std::string& name, const std::vector<std::string>& elements) {
    std::string m = absl::StrCat("  map ", name, " { type inet_service : ipv4_addr;");
    if (!elements.empty()) absl::StrAppend(&m, " elements = { ", Elements(elements), " };");
    return m + " }\n";
  };
  std::string out;
  // Create-then-delete makes the replacement one atomic transaction even on the first start.
  absl::StrAppend(&out, "table ip ", t, " {}\ndelete table ip ", t, "\ntable ip ", t, " {\n");
  absl::StrAppend(&out, map("tcp_fwd", tcp), map("udp_fwd", udp));
  auto set = [](const std::string& name, const std::vector<std::string>& elements, bool intervals) {
    std::string m = absl::StrCat("  set ", name, " { type ipv4_addr;", intervals ? " flags interval; auto-merge;" : "");
    if (!elements.empty()) absl::StrAppend(&m, " elements = { ", Elements(elements), " };");
    return m + " }\n";
  };
  absl::StrAppend(&out, set("denied", denied, true), set("lan", lan, true), set("own", own, false));
  const std::string dnat = absl::StrCat("    ip daddr ", options_.mesh_address, " dnat to tcp dport map @tcp_fwd\n",
                                        "    ip daddr ", options_.mesh_address, " dnat to udp dport map @udp_fwd\n");
  // route_localnet (set for a mesh on 127.0.0.1) would otherwise let a LAN neighbour route
  // packets for 127.0.0.1 to this node and reach every loopback service (CVE-2020-8558's class).
  absl::StrAppend(&out, "  chain loopback_guard {\n    type filter hook prerouting priority -300; policy accept;\n",
                  "    iif != \"lo\" ip daddr 127.0.0.0/8 counter drop\n  }\n");
  absl::StrAppend(&out, "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n", dnat,
                  "  }\n");
  absl::StrAppend(&out, "  chain output {\n    type nat hook output priority -100; policy accept;\n", dnat, "  }\n");
  absl::StrAppend(&out, "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
                  "    ip daddr ", link, " ip saddr 127.0.0.0/8 masquerade\n", "    ip saddr ", link,
                  " ip daddr != ", kLinkPool, " masquerade\n  }\n");
  // Whatever a namespace sends to the node itself is dropped, but for replies.
  absl::StrAppend(&out, "  chain input {\n    type filter hook input priority filter; policy accept;\n",
                  "    ip saddr ", link, " ct state established,related accept\n", "    ip saddr ", link,
                  " counter drop\n  }\n");
  absl::StrAppend(&out, "  chain forward {\n    type filter hook forward priority filter; policy accept;\n",
                  "    ip saddr ", link, " ct state established,related accept\n", "    ip saddr ", link,
                  " ip daddr @denied counter drop\n", "    ip saddr @own ip daddr @lan counter drop\n  }\n}\n");
  return out;
}

std::string VmNetwork::RenderVmRules(const EgressPolicy& policy) const {
  std::vector<std::string> denied = {"0.0.0.0/8",   "127.0.0.0/8",       "169.254.0.0/16", "224.0.0.0/4",
                                     "240.0.0.0/4", options_.mesh_range, kLinkPool,        options_.link_range};
  // Private networks are reached over a VM's own NIC on them, never through its egress.
  if (!options_.private_range.empty()) denied.push_back(options_.private_range);
  for (const std::string& a : options_.node_addresses) denied.push_back(a);
  for (const std::string& r : options_.lan_ranges) denied.push_back(r);
  std::string out = "table ip ppn {}\ndelete table ip ppn\ntable ip ppn {\n";
  absl::StrAppend(&out, "  set denied { type ipv4_addr; flags interval; auto-merge; elements = { ", Elements(denied),
                  " }; }\n");
  absl::StrAppend(&out, "  chain output {\n    type filter hook output priority filter; policy drop;\n");
  if (policy.rate_limit_kbit != 0) {
    // kbit/s → bytes/s; nft takes the rate in bytes.
    absl::StrAppend(&out, "    limit rate over ", std::max<uint64_t>(1, policy.rate_limit_kbit * 125),
                    " bytes/second counter drop\n");
  }
  absl::StrAppend(&out, "    ct state established,related accept\n");
  for (const std::string& dns : options_.dns_servers) {
    absl::StrAppend(&out, "    ip daddr ", dns, " udp dport 53 accept\n    ip daddr ", dns, " tcp dport 53 accept\n");
  }
  for (const EgressRule& r : policy.deny) absl::StrAppend(&out, "    ", RuleMatch(r), " counter drop\n");
  absl::StrAppend(&out, "    ip daddr @denied counter drop\n");
  for (const EgressRule& r : policy.allow) absl::StrAppend(&out, "    ", RuleMatch(r), " accept\n");
  if (policy.internet) absl::StrAppend(&out, "    accept\n");
  absl::StrAppend(&out, "    counter drop\n  }\n}\n");
  // No IPv6 at all: the veth ends get link-local addresses by themselves, and QEMU's user-mode
  // network has IPv6 off, so only something that escaped QEMU could use them (to the node's
  // fe80:: address, past every IPv4 rule above).
  absl::StrAppend(&out, "table ip6 ppn6 {}\ndelete table ip6 ppn6\ntable ip6 ppn6 {\n",
                  "  chain input { type filter hook input priority filter; policy drop; }\n",
                  "  chain output { type filter hook output priority filter; policy drop; }\n",
                  "  chain forward { type filter hook forward priority filter; policy drop; }\n}\n");
  return out;
}

absl::Status VmNetwork::RunBatch(const std::vector<std::string>& argv_prefix, const std::string& name,
                                 const std::string& content, const std::string& netns) {
  if (argv_prefix == std::vector<std::string>{"nft", "-f"}) {
    if (Nftables* nft = Nftables::Get(); nft != nullptr) {
      return InNamespace(netns, [&] { return nft->Apply(content); });
    }
  }
  // The file, not a pipe, keeps the runner simple and leaves what was applied to read.
  std::string path = absl::StrCat("/run/ppn-net-", NftName(Scope()), "-", name);
  PPN_RETURN_IF_ERROR(WriteFileAtomically(path, content, 0600));
  std::vector<std::string> argv = argv_prefix;
  argv.push_back(path);
  absl::StatusOr<std::string> out = run_(argv, netns);
  std::remove(path.c_str());
  return out.status();
}

std::map<std::string, uint32_t> VmNetwork::Claims() const {
  std::map<std::string, uint32_t> out;
  DIR* dir = opendir(options_.claims_dir.c_str());
  if (dir == nullptr) return out;
  while (dirent* d = readdir(dir)) {
    uint32_t index;
    if (!absl::SimpleAtoi(d->d_name, &index)) continue;
    absl::StatusOr<std::string> owner = ReadFile(absl::StrCat(options_.claims_dir, "/", d->d_name));
    if (!owner.ok()) continue;
    std::vector<std::string> f = absl::StrSplit(absl::StripAsciiWhitespace(*owner), ' ');
    if (f.size() == 2 && f[0] == Scope()) out[f[1]] = index;
  }
  closedir(dir);
  return out;
}

absl::StatusOr<VmLink> VmNetwork::Acquire(const std::string& vm_id) {
  std::map<std::string, uint32_t> mine = Claims();
  auto it = mine.find(vm_id);
  if (it != mine.end()) return LinkFor(vm_id, it->second);
  std::error_code ec;
  std::filesystem::create_directories(options_.claims_dir, ec);
  std::string owner = absl::StrCat(Scope(), " ", vm_id, "\n");
  for (uint32_t index = 0; index < Capacity(); ++index) {
    // O_EXCL: of two agents that try the same index, one gets it.
    std::string path = absl::StrCat(options_.claims_dir, "/", index);
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return absl::FailedPreconditionError(absl::StrCat("cannot claim a VM link in ", options_.claims_dir, ": ",
                                                        std::strerror(errno), " (the agent must run as root)"));
    }
    bool ok = write(fd, owner.data(), owner.size()) == static_cast<ssize_t>(owner.size());
    close(fd);
    if (!ok) {
      unlink(path.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", path));
    }
    return LinkFor(vm_id, index);
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("node ", options_.node_id, " has no free VM network link (", Capacity(), " in use)"));
}

void VmNetwork::Release(const VmLink& link) {
  std::string path = absl::StrCat(options_.claims_dir, "/", link.index);
  absl::StatusOr<std::string> owner = ReadFile(path);
  // Only our own claim: the index may have been taken again by another agent meanwhile.
  if (owner.ok() && absl::StripAsciiWhitespace(*owner) == absl::StrCat(Scope(), " ", VmIdOf(link))) {
    unlink(path.c_str());
  }
}

absl::StatusOr<std::map<std::string, VmLink>> VmNetwork::StartNode(
    const std::map<std::string, std::vector<PortForwardRule>>& live, std::vector<std::string>* removed) {
  std::vector<std::string> dropped;
  // Forwarding carries the namespaces' traffic; route_localnet lets a forward on 127.0.0.1
  // (the one-machine mesh) be DNATed into a namespace.
  std::vector<const char*> sysctls = {"/proc/sys/net/ipv4/ip_forward"};
  if (absl::StartsWith(options_.mesh_address, "127.")) sysctls.push_back("/proc/sys/net/ipv4/conf/all/route_localnet");
  for (const char* sysctl : sysctls) {
    if (absl::StripAsciiWhitespace(ReadFile(sysctl).value_or("")) == "1") continue;  // set already (a container's)
    int fd = open(sysctl, O_WRONLY | O_CLOEXEC);
    bool ok = fd >= 0 && write(fd, "1", 1) == 1;
    if (fd >= 0) close(fd);
    if (!ok) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot set ", sysctl, " to 1: run the agent as root, or set it for the node (a container: sysctls)"));
    }
  }
  std::map<std::string, VmLink> links;
  std::vector<std::pair<VmLink, std::vector<PortForwardRule>>> table;
  for (const auto& [vm_id, index] : Claims()) {
    PPN_ASSIGN_OR_RETURN(VmLink link, LinkFor(vm_id, index));
    auto it = live.find(vm_id);
    if (it == live.end()) {
      Remove(link, {}).IgnoreError();  // a VM that no longer exists (left by a crash)
      Release(link);
      dropped.push_back(link.netns);
      continue;
    }
    links[vm_id] = link;
    table.emplace_back(link, it->second);
  }
  {
    absl::MutexLock l(&table_mu_);
    PPN_RETURN_IF_ERROR(RunBatch({"nft", "-f"}, "node.nft", RenderNodeTable(table), ""));
  }
  // Docker sets the iptables FORWARD policy to DROP, which would drop the namespaces' forwarded
  // traffic after our own table accepted it; its DOCKER-USER chain is where a host says
  // otherwise. (Our table still drops what a namespace must not reach.)
  if (run_({"iptables", "-S", "DOCKER-USER"}, "").ok()) {
    for (const char* dir : {"-s", "-d"}) {
      std::vector<std::string> rule = {"DOCKER-USER", dir, options_.link_range, "-j", "ACCEPT"};
      std::vector<std::string> check = {"iptables", "-C"}, insert = {"iptables", "-I"};
      check.insert(check.end(), rule.begin(), rule.end());
      insert.insert(insert.end(), rule.begin(), rule.end());
      if (!run_(check, "").ok()) PPN_RETURN_IF_ERROR(run_(insert, "").status());
    }
  }
  // Namespaces of this node without a claim: made by a crash between the two.
  std::set<std::string> keep;
  for (const auto& [_, link] : links) keep.insert(link.netns);
  for (const std::string& ns : ListNamespaces()) {
    if (keep.count(ns) != 0) continue;
    run_({"ip", "netns", "del", ns}, "").IgnoreError();
    dropped.push_back(ns);
  }
  if (removed != nullptr) *removed = std::move(dropped);
  return links;
}

absl::Status VmNetwork::Create(const VmLink& link, const EgressPolicy& policy) {
  PPN_RETURN_IF_ERROR(ValidateEgressPolicy(policy));
  // A namespace of the same name can only be a leftover of this VM: start from nothing.
  if (access(absl::StrCat("/run/netns/", link.netns).c_str(), F_OK) == 0) Remove(link, {}).IgnoreError();
  absl::Status s = MakeLinkInProcess(link);
  if (s.ok()) s = ApplyPolicy(link, policy);
  if (!s.ok()) {
    Remove(link, {}).IgnoreError();
    return absl::Status(s.code(), absl::StrCat("cannot make the network of ", link.netns, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status VmNetwork::ApplyPolicy(const VmLink& link, const EgressPolicy& policy) {
  PPN_RETURN_IF_ERROR(ValidateEgressPolicy(policy));
  return RunBatch({"nft", "-f"}, link.host_if + ".nft", RenderVmRules(policy), link.netns);
}

absl::Status VmNetwork::AddForwards(const VmLink& link, const std::vector<PortForwardRule>& forwards) {
  // The VM is this agent's from now on: its LAN ranges apply to it (see RenderNodeTable).
  std::string nft = absl::StrCat("add element ip ", NodeTableName(), " own { ", link.netns_ip, " }\n");
  for (const PortForwardRule& f : forwards) {
    absl::StrAppend(&nft, "add element ip ", NodeTableName(), " ", f.udp ? "udp_fwd" : "tcp_fwd", " { ", f.host_port,
                    " : ", link.netns_ip, " }\n");
  }
  absl::MutexLock l(&table_mu_);
  return RunBatch({"nft", "-f"}, link.host_if + ".fwd", nft, "");
}

absl::Status VmNetwork::Remove(const VmLink& link, const std::vector<PortForwardRule>& forwards) {
  {
    absl::MutexLock l(&table_mu_);
    std::string nft = absl::StrCat("delete element ip ", NodeTableName(), " own { ", link.netns_ip, " }\n");
    for (const PortForwardRule& f : forwards) {
      absl::StrAppend(&nft, "delete element ip ", NodeTableName(), " ", f.udp ? "udp_fwd" : "tcp_fwd", " { ",
                      f.host_port, " }\n");
    }
    // One transaction; an element already gone (a half-made VM) must not keep the others.
    if (!RunBatch({"nft", "-f"}, link.host_if + ".unfwd", nft, "").ok()) {
      run_({"nft", "delete", "element", "ip", NodeTableName(), "own", absl::StrCat("{ ", link.netns_ip, " }")}, "")
          .IgnoreError();
      for (const PortForwardRule& f : forwards) {
        run_({"nft", "delete", "element", "ip", NodeTableName(), f.udp ? "udp_fwd" : "tcp_fwd",
              absl::StrCat("{ ", f.host_port, " }")},
             "")
            .IgnoreError();
      }
    }
  }
  std::string batch = absl::StrCat("link del ", link.host_if, "\nnetns del ", link.netns, "\n");
  RunBatch({"ip", "-force", "-batch"}, link.host_if + ".del", batch, "").IgnoreError();
  for (const std::string& ns : ListNamespaces()) {
    if (ns == link.netns) return absl::InternalError(absl::StrCat("network namespace ", ns, " could not be removed"));
  }
  return absl::OkStatus();
}

LinkCounters VmNetwork::Counters(const VmLink& link) const {
  auto read = [&](const char* name) {
    uint64_t v = 0;
    absl::StatusOr<std::string> text = ReadFile(absl::StrCat("/sys/class/net/", link.host_if, "/statistics/", name));
    if (text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &v)) return v;
    return uint64_t{0};
  };
  // The node's end receives what the guest sends.
  return {read("rx_bytes"), read("tx_bytes"), read("rx_packets"), read("tx_packets")};
}

std::vector<std::string> VmNetwork::ListNamespaces() const {
  std::vector<std::string> out;
  std::string prefix = NamespacePrefix();
  DIR* dir = opendir("/run/netns");
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    // VM ids hold no dots: ppn.<scope>.net.<id> is a private network's router (PrivateNetworks).
    if (absl::StartsWith(e->d_name, prefix) && std::strchr(e->d_name + prefix.size(), '.') == nullptr) {
      out.push_back(e->d_name);
    }
  }
  closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace ppn::host
