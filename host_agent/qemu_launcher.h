#pragma once

// The privileged corner of the agent, kept small on purpose (as Firecracker's jailer is):
// the QEMU command line, the per-VM cgroup, the drop to an unprivileged user and the exec.
// Everything else talks to QEMU through QMP.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/process.h"
#include "host_agent/image_catalog.h"

namespace ppn::host {

struct HostForward {
  std::string host_address;
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  bool udp = false;
};

// A NIC on a tap device that exists in QEMU's network namespace (a private network's).
struct TapNic {
  std::string ifname;
  std::string mac;
};

// Everything that decides how one QEMU process runs.
struct LaunchSpec {
  std::string qemu_binary = "qemu-system-x86_64";
  std::string vm_id;
  std::string vm_dir;  // disk.qcow2, seed.iso, qmp.sock, console.log, qemu.log live here
  uint32_t vcpus = 1;
  uint32_t memory_mib = 128;
  uint32_t max_memory_mib = 0;  // above memory_mib: a virtio-mem device (id vmem0) holds the rest
  bool kvm = false;
  Image image;
  std::vector<HostForward> forwards;  // host_address: where QEMU listens (its namespace's address)
  bool incoming = false;              // a migration target: -incoming defer, the stream comes as a descriptor
  // Guest RAM: empty for anonymous memory; else this file (a template's memory), mapped shared
  // (a template being made: its pages land in the file) or private (a clone restored from it:
  // copy-on-write, the file never changes).
  std::string memory_file;
  bool memory_shared = false;
  // The disk overlay and seed when not the VM directory's (a clone's seed is its template's).
  std::string seed_path;
  // The VM Generation ID the guest sees ("auto" for a fresh one); a clone gets its own.
  std::string vmgenid = "auto";
  bool restrict_network = false;  // user-mode networking with no way out (a template's boot)
  // A directory with ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and
  // client-key.pem (the node's identity), for TLS-protected migration streams: QEMU gets the
  // credentials "tls-server" (verifying its peer) and "tls-client". Empty: none.
  std::string tls_dir;
  std::string netns;         // the VM's network namespace; empty for the node's own
  std::vector<TapNic> taps;  // NICs after the first, in this order
  bool seccomp = true;
  std::string run_as_user;  // drop to this user after setup; empty to stay
  std::string cgroup_dir;   // a cgroup v2 directory to run in; empty for none
};

// The QEMU argv (argv[0] is the binary). Pure: unit-tested without QEMU.
std::vector<std::string> BuildQemuArgs(const LaunchSpec& spec);

// The VM id of a QEMU command line this agent made for a VM under `vms_dir` ("-name
// ppn-<id>" and its files in vms_dir/<id>/), or nullopt for any other process.
std::optional<std::string> QemuVmId(const std::vector<std::string>& argv, const std::string& vms_dir);

// Creates the per-VM cgroup under `cgroup_root` with memory.max (guest memory plus QEMU's
// own overhead), cpu.weight (100 per vCPU) and pids.max. Returns the directory.
absl::StatusOr<std::string> CreateVmCgroup(const std::string& cgroup_root, const LaunchSpec& spec);

// Starts QEMU through `spawner` in its own session (so signals to the agent's process group
// never reach it, and it outlives an agent crash), inside `spec.cgroup_dir` if set, with
// stdout/stderr to VM_DIR/qemu.log.
absl::StatusOr<std::unique_ptr<Process>> LaunchQemu(ProcessSpawner* spawner, const LaunchSpec& spec);

}  // namespace ppn::host
