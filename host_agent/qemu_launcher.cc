#include "host_agent/qemu_launcher.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "host_agent/vm_files.h"

namespace ppn::host {
namespace {

// QEMU's own memory on top of the guest's (TCG translation cache, device state).
constexpr uint64_t kQemuOverheadMib = 256;

bool WriteSmallFile(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, value.data(), value.size()) == static_cast<ssize_t>(value.size());
  close(fd);
  return ok;
}

}  // namespace

std::optional<std::string> QemuVmId(const std::vector<std::string>& argv, const std::string& vms_dir) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] != "-name" || !absl::StartsWith(argv[i + 1], "ppn-")) continue;
    std::string id = argv[i + 1].substr(4);
    std::string files = absl::StrCat(vms_dir, "/", id, "/");
    for (const std::string& a : argv) {
      if (!id.empty() && absl::StrContains(a, files)) return id;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::vector<std::string> BuildQemuArgs(const LaunchSpec& spec) {
  std::vector<std::string> a = {spec.qemu_binary};
  auto add = [&a](std::initializer_list<std::string> more) { a.insert(a.end(), more); };
  // The process name carries the VM id: re-adoption checks /proc/<pid>/cmdline for it.
  add({"-name", "ppn-" + spec.vm_id, "-no-user-config", "-nodefaults", "-display", "none"});
  // Every VM has the same devices and a named RAM backend, whether it boots, is restored from
  // a template or arrives by migration: a snapshot or stream of one loads into any other.
  add({"-machine", absl::StrCat("q35,accel=", spec.kvm ? "kvm" : "tcg", ",memory-backend=ram0")});
  if (spec.kvm) add({"-cpu", "host"});
  const bool vmem = spec.max_memory_mib > spec.memory_mib;
  add({"-m",
       vmem ? absl::StrCat(spec.memory_mib, "M,maxmem=", spec.max_memory_mib, "M") : absl::StrCat(spec.memory_mib),
       "-smp", absl::StrCat(spec.vcpus)});
  if (spec.memory_file.empty()) {
    add({"-object", absl::StrCat("memory-backend-ram,id=ram0,size=", spec.memory_mib, "M")});
  } else {
    add({"-object", absl::StrCat("memory-backend-file,id=ram0,size=", spec.memory_mib, "M,mem-path=", spec.memory_file,
                                 ",share=", spec.memory_shared ? "on" : "off")});
  }
  if (vmem) {
    // Memory ResizeVm plugs in and out (the guest's virtio_mem driver), nothing plugged at start.
    add({"-object", absl::StrCat("memory-backend-ram,id=vmem0-ram,size=", spec.max_memory_mib - spec.memory_mib, "M"),
         "-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-ram,requested-size=0"});
  }
  if (!spec.image.kernel.empty()) {
    add({"-kernel", spec.image.kernel});
    if (!spec.image.initrd.empty()) add({"-initrd", spec.image.initrd});
    if (!spec.image.append.empty()) add({"-append", spec.image.append});
  }
  add({"-drive", absl::StrCat("file=", DiskPath(spec.vm_dir), ",if=none,id=drive0,format=qcow2"), "-device",
       "virtio-blk-pci,drive=drive0,id=disk0"});
  add({"-drive",
       absl::StrCat("file=", spec.seed_path.empty() ? SeedPath(spec.vm_dir) : spec.seed_path,
                    ",if=none,id=seed0,format=raw,readonly=on"),
       "-device", "virtio-blk-pci,drive=seed0,id=seed"});
  // User-mode networking, in the VM's own namespace when it has one: DHCP and DNS for any image,
  // and the guest reaches only what that namespace's rules let through. No IPv6: the namespace
  // has none.
  std::string netdev = spec.restrict_network ? "user,id=net0,ipv6=off,restrict=on" : "user,id=net0,ipv6=off";
  for (const HostForward& f : spec.forwards) {
    absl::StrAppend(&netdev, ",hostfwd=", f.udp ? "udp" : "tcp", ":", f.host_address, ":", f.host_port,
                    "-:", f.guest_port);
  }
  add({"-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile="});
  // Private networks: taps made by the agent, so QEMU runs no script.
  for (size_t i = 0; i < spec.taps.size(); ++i) {
    add({"-netdev", absl::StrCat("tap,id=priv", i, ",ifname=", spec.taps[i].ifname, ",script=no,downscript=no"),
         "-device", absl::StrCat("virtio-net-pci,netdev=priv", i, ",mac=", spec.taps[i].mac, ",romfile=")});
  }
  // deflate-on-oom: the guest takes pages back from its balloon rather than kill a process,
  // should it run out before the balloon controller deflates it.
  add({"-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on"});
  // The identity channel (docs/templates.md) and a VM Generation ID, so that a restored guest
  // learns it is a new machine.
  add({"-device", "virtio-serial-pci,id=vserial0", "-chardev",
       absl::StrCat("socket,id=identity0,path=", IdentitySocketPath(spec.vm_dir), ",server=on,wait=off"), "-device",
       "virtserialport,chardev=identity0,name=org.ppn.identity.0", "-device",
       absl::StrCat("vmgenid,guid=", spec.vmgenid.empty() ? "auto" : spec.vmgenid)});
  add({"-chardev", absl::StrCat("file,id=serial0,append=on,path=", ConsoleLogPath(spec.vm_dir)), "-serial",
       "chardev:serial0"});
  add({"-qmp", absl::StrCat("unix:", QmpSocketPath(spec.vm_dir), ",server=on,wait=off")});
  if (spec.seccomp) {
    // Dropping to run_as_user needs one setuid after the filter is installed.
    add({"-sandbox", absl::StrCat("on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=",
                                  spec.run_as_user.empty() ? "deny" : "allow")});
  }
  if (!spec.tls_dir.empty()) {
    // Loaded as root before -runas takes effect: the keys stay readable by root only.
    add({"-object", absl::StrCat("tls-creds-x509,id=tls-server,endpoint=server,verify-peer=on,dir=", spec.tls_dir),
         "-object", absl::StrCat("tls-creds-x509,id=tls-client,endpoint=client,dir=", spec.tls_dir)});
  }
  if (!spec.run_as_user.empty()) add({"-runas", spec.run_as_user});
  if (spec.incoming) add({"-incoming", "defer"});
  return a;
}

absl::StatusOr<std::string> CreateVmCgroup(const std::string& cgroup_root, const LaunchSpec& spec) {
  std::string dir = cgroup_root + "/" + spec.vm_id;
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create cgroup ", dir));
  }
  uint64_t max_bytes = (uint64_t{std::max(spec.memory_mib, spec.max_memory_mib)} + kQemuOverheadMib) << 20;
  if (!WriteSmallFile(dir + "/memory.max", absl::StrCat(max_bytes)) ||
      !WriteSmallFile(dir + "/cpu.weight", absl::StrCat(100 * spec.vcpus)) ||
      !WriteSmallFile(dir + "/pids.max", "512")) {
    rmdir(dir.c_str());
    return absl::PermissionDeniedError(absl::StrCat("cannot set limits in cgroup ", dir));
  }
  return dir;
}

absl::StatusOr<std::unique_ptr<Process>> LaunchQemu(ProcessSpawner* spawner, const LaunchSpec& spec) {
  SpawnSpec process;
  process.argv = BuildQemuArgs(spec);
  process.output_path = QemuLogPath(spec.vm_dir);
  process.new_session = true;
  process.cgroup_dir = spec.cgroup_dir;
  process.netns = spec.netns;
  return spawner->Spawn(process);
}

}  // namespace ppn::host
