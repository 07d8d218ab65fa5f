#include "host_agent/private_network.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ppn::host {
namespace {

constexpr char kBridge[] = "br0";

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
  for (const std::string& ns : NamespacesWithPrefix(RouterPrefix(scope))) {
    run({"ip", "netns", "del", ns}, "").IgnoreError();
  }
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
  absl::Status s =
      RunBatch(ns, "router", absl::StrCat("link add ", kBridge, " type bridge\nlink set ", kBridge, " up\n"));
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
  run_({"ip", "netns", "del", router}, "").IgnoreError();
}

std::vector<std::string> PrivateNetworks::RouterPorts(const std::string& network_id) const {
  std::vector<std::string> out;
  absl::StatusOr<std::string> text = run_({"ip", "-n", RouterNamespace(network_id), "-j", "link", "show"}, "");
  if (!text.ok()) return out;
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return out;
  for (const auto& link : j) {
    std::string name = link.value("ifname", "");
    if (name == "lo" || name == kBridge || name.empty()) continue;
    out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
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
      run_({"ip", "netns", "del", ns}, "").IgnoreError();
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
