#pragma once

// What this node is and can do: memory, CPUs, load, and the containment features it can
// apply (KVM by a functional probe, cgroup v2, QEMU's seccomp sandbox, an unprivileged user).

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process.h"
#include "host_agent/image_catalog.h"

namespace ppn::host {

enum class KvmMode { kAuto, kOff, kSimulate };

struct MemoryInfo {
  uint64_t total_mib = 0;
  uint64_t available_mib = 0;
};

// The memory this node can give guests: the machine's, or less when the agent runs in a
// memory-limited cgroup (a container with a memory limit, a systemd slice with MemoryMax=), v1
// or v2. `proc` and `cgroup_fs` are parameters so tests can lay out fake trees.
MemoryInfo ReadMemoryInfo(const std::string& proc = "/proc", const std::string& cgroup_fs = "/sys/fs/cgroup");
uint32_t CpuCount();
double LoadAverage();

// Boots `image` under KVM and waits up to `timeout` for its probe marker on the serial
// console ("PPN-PROBE-OK", printed by the test guest when the kernel command line holds
// ppn.probe). The result is cached in `cache_file` for the current boot of the host, since
// it cannot change until a reboot. Returns the reason when KVM is not usable.
struct KvmProbeResult {
  bool usable = false;
  std::string reason;
};
KvmProbeResult ProbeKvm(ProcessSpawner* spawner, const std::string& qemu_binary, const Image& image,
                        const std::string& work_dir, const std::string& cache_file, absl::Duration timeout);

// A cgroup v2 directory where the agent can create per-VM children with memory, cpu and
// pids limits, or the reason there is none.
struct CgroupProbeResult {
  std::string root;  // empty when unavailable
  std::string reason;
};
CgroupProbeResult ProbeCgroup(const std::string& node_id);

// True if QEMU was built with seccomp support and the kernel offers it.
bool ProbeSeccomp(ProcessSpawner* spawner, const std::string& qemu_binary);

// OK if `user` (whom QEMU drops to) can search every directory from / down to `dir` and write
// in a directory under `dir` handed to it, as the agent hands each VM its directory: under a
// 0700 parent QEMU can open nothing once it has dropped privileges, and every incoming
// migration fails. FAILED_PRECONDITION in one line naming the directory otherwise.
absl::Status CheckQemuUserAccess(ProcessSpawner* spawner, const RunAs& user, const std::string& dir);

// What the node offers VMs: KVM (probed only in kAuto), a cgroup v2 root, QEMU's sandbox.
struct NodeFeatureProbe {
  std::string node_id;
  KvmMode kvm_mode = KvmMode::kAuto;
  std::string qemu_binary;
  const Image* kvm_probe_image = nullptr;  // none in the catalog: no KVM
  std::string state_dir;                   // holds the probe's cache
  absl::Duration kvm_probe_timeout;
  bool use_cgroups = true;
};
struct NodeFeatures {
  bool kvm_usable = false;
  std::string kvm_reason;
  std::string cgroup_root;  // empty: none
  std::string cgroup_reason;
  bool seccomp = false;
};
NodeFeatures ProbeNodeFeatures(ProcessSpawner* spawner, const NodeFeatureProbe& probe);

// The user QEMU should drop to: `wanted` if the agent is root and that user exists, else
// empty (QEMU then runs as the agent's own, already unprivileged or root, user).
std::string ResolveQemuUser(const std::string& wanted);

}  // namespace ppn::host
