#include "mesh/wireguard_device.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "mesh/addresses.h"
#include "mesh/wireguard_key.h"
#include "nlohmann/json.hpp"

namespace ppn::mesh {
namespace {

bool IsValidInterfaceName(absl::string_view name) {
  if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '=' || c == '+' || c == '.' || c == '-';
  });
}

bool IsValidCidr(absl::string_view cidr) { return ParseIpv4Prefix(cidr).ok(); }

// The lines of a tool's complaint worth quoting: wireguard-go prints a banner box around its
// one ERROR line.
std::string Complaint(absl::string_view output) {
  std::vector<std::string> errors, other;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "\xe2\x94")) continue;  // box-drawing characters
    (absl::StrContains(line, "ERROR") ? errors : other).emplace_back(line);
  }
  std::string out = absl::StrJoin(errors.empty() ? other : errors, "; ");
  return out.size() > 400 ? out.substr(0, 400) : out;
}

bool FindProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::string dirs = absl::StrCat(path == nullptr ? "" : path, ":/usr/sbin:/usr/bin:/sbin:/bin");
  for (absl::string_view dir : absl::StrSplit(dirs, ':', absl::SkipEmpty())) {
    if (access(absl::StrCat(dir, "/", program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

bool StatusHasNetAdmin(absl::string_view proc_status) {
  for (absl::string_view line : absl::StrSplit(proc_status, '\n')) {
    if (!absl::ConsumePrefix(&line, "CapEff:")) continue;
    uint64_t caps = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(line), &caps)) return false;
    return (caps >> 12) & 1;  // CAP_NET_ADMIN
  }
  return false;
}

UserspaceFacts GatherUserspaceFacts(const WireGuardDeviceOptions& options) {
  UserspaceFacts facts;
  struct stat st;
  facts.tun_present = stat(options.tun_path.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
  facts.net_admin = StatusHasNetAdmin(ReadFile("/proc/self/status").value_or(""));
  facts.euid = geteuid();
  facts.wireguard_go_found = FindProgram(options.wireguard_go);
  return facts;
}

absl::Status CheckUserspacePrerequisites(const UserspaceFacts& facts, const WireGuardDeviceOptions& options) {
  const std::string what = absl::StrCat("WireGuard interface ", options.interface_name, " (wireguard-go)");
  if (!facts.net_admin) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " needs root (CAP_NET_ADMIN); running as uid ", facts.euid, " without it"));
  }
  if (!facts.tun_present) {
    return absl::FailedPreconditionError(absl::StrCat(what, " needs the tun device ", options.tun_path,
                                                      ", which is missing (a container needs --device /dev/net/tun)"));
  }
  if (!facts.wireguard_go_found) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": the kernel has no wireguard and ", options.wireguard_go,
                     " is not installed (apt-get install wireguard-go wireguard-tools, or run tools/setup)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceState> ParseWgDump(absl::string_view dump) {
  DeviceState state;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(dump, '\n', absl::SkipEmpty())) {
    ++line_number;
    std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
    if (line_number == 1) {
      uint32_t port = 0;
      if (f.size() != 4 || !absl::SimpleAtoi(f[2], &port) || port > 65535) {
        return absl::InternalError(absl::StrCat("wg show dump: the interface line has ", f.size(), " fields"));
      }
      state.public_key = f[1] == "(none)" ? "" : std::string(f[1]);
      state.listen_port = static_cast<uint16_t>(port);
      continue;
    }
    PeerState peer;
    int64_t handshake = 0;
    int keepalive = 0;
    if (f.size() != 8 || !absl::SimpleAtoi(f[4], &handshake) || !absl::SimpleAtoi(f[5], &peer.rx_bytes) ||
        !absl::SimpleAtoi(f[6], &peer.tx_bytes) || (f[7] != "off" && !absl::SimpleAtoi(f[7], &keepalive))) {
      return absl::InternalError(absl::StrCat("wg show dump: peer line ", line_number, " is malformed"));
    }
    peer.public_key = std::string(f[0]);
    peer.endpoint = f[2] == "(none)" ? "" : std::string(f[2]);
    if (f[3] != "(none)") peer.allowed_ips = absl::StrSplit(f[3], ',', absl::SkipEmpty());
    if (handshake > 0) peer.latest_handshake = absl::FromUnixSeconds(handshake);
    peer.persistent_keepalive_seconds = keepalive;
    state.peers.push_back(std::move(peer));
  }
  if (line_number == 0) return absl::InternalError("wg show dump: no output");
  return state;
}

absl::StatusOr<std::vector<std::string>> WgSetArgs(const std::string& interface_name,
                                                   const std::vector<PeerUpdate>& updates) {
  std::vector<std::string> argv = {"wg", "set", interface_name};
  for (const PeerUpdate& u : updates) {
    const PeerConfig& p = u.peer;
    if (!IsWireGuardKey(p.public_key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer key \"", p.public_key.substr(0, 60), "\" is not a WireGuard key"));
    }
    argv.insert(argv.end(), {"peer", p.public_key});
    if (u.remove) {
      argv.push_back("remove");
      continue;
    }
    if (u.set_endpoint && !p.endpoint.empty()) {
      if (!IsValidEndpoint(p.endpoint)) {
        return absl::InvalidArgumentError(
            absl::StrCat("peer endpoint \"", p.endpoint.substr(0, 80), "\" is not host:port"));
      }
      argv.insert(argv.end(), {"endpoint", p.endpoint});
    }
    if (p.persistent_keepalive_seconds < 0 || p.persistent_keepalive_seconds > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("persistent keepalive ", p.persistent_keepalive_seconds, " is not 0-65535 seconds"));
    }
    argv.insert(argv.end(),
                {"persistent-keepalive",
                 p.persistent_keepalive_seconds == 0 ? "off" : std::to_string(p.persistent_keepalive_seconds)});
    for (const std::string& cidr : p.allowed_ips) {
      if (!IsValidCidr(cidr))
        return absl::InvalidArgumentError(absl::StrCat("allowed IP \"", cidr.substr(0, 60), "\" is not an IPv4 CIDR"));
    }
    argv.insert(argv.end(), {"allowed-ips", absl::StrJoin(p.allowed_ips, ",")});
  }
  return argv;
}

absl::StatusOr<std::unique_ptr<WireGuardDevice>> WireGuardDevice::Create(WireGuardDeviceOptions options,
                                                                         CommandRunner runner) {
  if (!IsValidInterfaceName(options.interface_name) || !IsValidInterfaceName(options.probe_interface) ||
      options.probe_interface == options.interface_name) {
    return absl::InvalidArgumentError(
        absl::StrCat("interface name \"", options.interface_name.substr(0, 32), "\" is not 1-15 of [A-Za-z0-9_=+.-]"));
  }
  std::optional<uint32_t> address = ParseIpv4(options.address);
  if (!address.has_value() || options.prefix_length < 1 || options.prefix_length > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("mesh address \"", options.address.substr(0, 32), "/", options.prefix_length, "\" is not IPv4"));
  }
  if (options.listen_port == 0) return absl::InvalidArgumentError("the WireGuard listen port must be set");
  if (options.private_key_file.empty()) return absl::InvalidArgumentError("the WireGuard key file must be set");
  return std::unique_ptr<WireGuardDevice>(new WireGuardDevice(std::move(options), std::move(runner)));
}

absl::StatusOr<std::string> WireGuardDevice::Run(const std::vector<std::string>& argv) const {
  return runner_(argv, options_.netns);
}

absl::StatusOr<std::optional<WireGuardDevice::Link>> WireGuardDevice::FindLink() const {
  PPN_ASSIGN_OR_RETURN(std::string json, Run({"ip", "-j", "-d", "link", "show"}));
  nlohmann::json links = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!links.is_array()) return absl::InternalError("ip -j link show: not a JSON array");
  for (const auto& l : links) {
    if (!l.is_object() || l.value("ifname", "") != options_.interface_name) continue;
    Link link;
    for (const auto& flag : l.value("flags", nlohmann::json::array())) {
      if (flag.is_string() && flag.get<std::string>() == "UP") link.up = true;
    }
    if (l.contains("linkinfo") && l["linkinfo"].is_object()) link.kind = l["linkinfo"].value("info_kind", "");
    return std::optional<Link>(link);
  }
  return std::optional<Link>();
}

absl::StatusOr<DeviceState> WireGuardDevice::Dump() const {
  absl::StatusOr<std::string> dump = Run({"wg", "show", options_.interface_name, "dump"});
  if (!dump.ok()) {
    return absl::UnavailableError(absl::StrCat("WireGuard interface ", options_.interface_name,
                                               " does not answer: ", Complaint(dump.status().message())));
  }
  return ParseWgDump(*dump);
}

bool WireGuardDevice::KernelProbe() const {
  Run({"ip", "link", "del", options_.probe_interface}).IgnoreError();  // left by a crash, if at all
  if (!Run({"ip", "link", "add", options_.probe_interface, "type", "wireguard"}).ok()) return false;
  Run({"ip", "link", "del", options_.probe_interface}).IgnoreError();
  return true;
}

absl::Status WireGuardDevice::Create(bool kernel) const {
  const std::string& name = options_.interface_name;
  if (kernel) {
    absl::StatusOr<std::string> added = Run({"ip", "link", "add", name, "type", "wireguard"});
    if (added.ok()) return absl::OkStatus();
    if (options_.backend == Backend::kKernel && absl::StrContains(added.status().message(), "Unknown device type")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "WireGuard interface ", name, ": the kernel has no wireguard module (backend forced to kernel)"));
    }
    return absl::InternalError(
        absl::StrCat("creating WireGuard interface ", name, ": ", Complaint(added.status().message())));
  }
  absl::StatusOr<std::string> started = Run({options_.wireguard_go, name});
  if (started.ok()) return absl::OkStatus();
  std::string why = Complaint(started.status().message());
  if (absl::StrContains(why, "UAPI listen error: unix socket in use")) {
    return absl::FailedPreconditionError(
        absl::StrCat("WireGuard interface name ", name, " is taken by a wireguard-go in another network namespace of ",
                     "this machine (/var/run/wireguard/", name, ".sock): choose another interface name"));
  }
  return absl::InternalError(absl::StrCat("starting wireguard-go for ", name, ": ", why));
}

absl::Status WireGuardDevice::Configure() const {
  const std::string& name = options_.interface_name;
  absl::StatusOr<std::string> set = Run({"wg", "set", name, "listen-port", std::to_string(options_.listen_port),
                                         "private-key", options_.private_key_file});
  if (!set.ok()) {
    std::string why = Complaint(set.status().message());
    if (absl::StrContains(why, "in use")) {
      return absl::FailedPreconditionError(
          absl::StrCat("WireGuard listen port ", options_.listen_port, " is in use: ", why));
    }
    return absl::InternalError(absl::StrCat("configuring WireGuard interface ", name, ": ", why));
  }
  return EnsureAddressAndUp();
}

absl::Status WireGuardDevice::EnsureAddressAndUp() const {
  const std::string& name = options_.interface_name;
  const std::string want = absl::StrCat(options_.address, "/", options_.prefix_length);
  PPN_ASSIGN_OR_RETURN(std::string json, Run({"ip", "-j", "-4", "addr", "show", "dev", name}));
  nlohmann::json ifaces = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> have;
  if (ifaces.is_array()) {
    for (const auto& iface : ifaces) {
      if (!iface.is_object()) continue;
      for (const auto& a : iface.value("addr_info", nlohmann::json::array())) {
        if (a.is_object()) have.push_back(absl::StrCat(a.value("local", ""), "/", a.value("prefixlen", 0)));
      }
    }
  }
  if (have != std::vector<std::string>{want}) {
    // A mesh address that changed since the last run (or none yet): exactly one address, ours.
    if (!have.empty()) PPN_RETURN_IF_ERROR(Run({"ip", "addr", "flush", "dev", name}).status());
    absl::StatusOr<std::string> added = Run({"ip", "addr", "add", want, "dev", name});
    if (!added.ok()) {
      return absl::InternalError(
          absl::StrCat("adding ", want, " to ", name, ": ", Complaint(added.status().message())));
    }
  }
  absl::StatusOr<std::string> up = Run({"ip", "link", "set", name, "up"});
  if (!up.ok()) return absl::InternalError(absl::StrCat("setting ", name, " up: ", Complaint(up.status().message())));
  return absl::OkStatus();
}

absl::StatusOr<UpResult> WireGuardDevice::Up() {
  const std::string& name = options_.interface_name;
  PPN_ASSIGN_OR_RETURN(WireGuardKeyPair key, ReadPrivateKeyFile(options_.private_key_file));
  const std::string public_key = key.public_key;
  std::fill(key.private_key.begin(), key.private_key.end(), '\0');
  PPN_ASSIGN_OR_RETURN(std::optional<Link> link, FindLink());
  UpResult result;
  if (link.has_value()) {
    absl::StatusOr<DeviceState> state = Dump();
    if (state.ok() && state->public_key == public_key && state->listen_port == options_.listen_port) {
      PPN_RETURN_IF_ERROR(EnsureAddressAndUp());
      result.adopted = true;
      result.backend = link->kind == "wireguard" ? "kernel" : "wireguard-go";
      return result;
    }
    // Another key or port (or not WireGuard at all): the interface of a different identity.
    absl::StatusOr<std::string> removed = Run({"ip", "link", "del", name});
    if (!removed.ok()) {
      return absl::InternalError(
          absl::StrCat("removing the stale interface ", name, ": ", Complaint(removed.status().message())));
    }
  }
  bool kernel = options_.backend == Backend::kKernel || (options_.backend == Backend::kAuto && KernelProbe());
  if (!kernel) PPN_RETURN_IF_ERROR(CheckUserspacePrerequisites(GatherUserspaceFacts(options_), options_));
  PPN_RETURN_IF_ERROR(Create(kernel));
  absl::Status configured = Configure();
  if (!configured.ok()) {
    Run({"ip", "link", "del", name}).IgnoreError();  // leave nothing behind
    return configured;
  }
  result.backend = kernel ? "kernel" : "wireguard-go";
  return result;
}

absl::Status WireGuardDevice::Down() {
  PPN_ASSIGN_OR_RETURN(std::optional<Link> link, FindLink());
  if (!link.has_value()) return absl::OkStatus();
  // Deleting the link ends a wireguard-go daemon too: it exits when its tun device goes.
  absl::StatusOr<std::string> removed = Run({"ip", "link", "del", options_.interface_name});
  if (!removed.ok()) {
    return absl::InternalError(
        absl::StrCat("removing ", options_.interface_name, ": ", Complaint(removed.status().message())));
  }
  return absl::OkStatus();
}

absl::Status WireGuardDevice::UpdatePeers(const std::vector<PeerUpdate>& updates) {
  if (updates.empty()) return absl::OkStatus();
  PPN_ASSIGN_OR_RETURN(std::vector<std::string> argv, WgSetArgs(options_.interface_name, updates));
  absl::StatusOr<std::string> set = Run(argv);
  if (!set.ok()) {
    return absl::UnavailableError(
        absl::StrCat("updating the peers of ", options_.interface_name, ": ", Complaint(set.status().message())));
  }
  return absl::OkStatus();
}

absl::Status WireGuardDevice::EnableForwarding() {
  // Only packets that arrive on the mesh interface: the node's other interfaces keep theirs.
  absl::StatusOr<std::string> set =
      Run({"sysctl", "-q", "-w", absl::StrCat("net/ipv4/conf/", options_.interface_name, "/forwarding=1")});
  if (!set.ok()) {
    return absl::InternalError(
        absl::StrCat("enabling forwarding on ", options_.interface_name, ": ", Complaint(set.status().message())));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceState> WireGuardDevice::State() {
  PPN_ASSIGN_OR_RETURN(std::optional<Link> link, FindLink());
  if (!link.has_value()) return DeviceState{};
  PPN_ASSIGN_OR_RETURN(DeviceState state, Dump());
  state.up = link->up;
  return state;
}

}  // namespace ppn::mesh
