#pragma once

// Per-image templates: a guest booted once on this node, saved when ready, so that creates
// restore it instead of booting (docs/templates.md). This unit owns the template files and
// their meaning: the key (a digest of everything that changes what the saved state means),
// the directory STATE/templates/<key>/ (memory, state, disk.qcow2, seed.iso, manifest.json,
// installed atomically), the checks that a template is intact, the QMP steps of a save and a
// restore, and the identity a clone is given over its identity channel. It starts no
// process: VmManager boots and restores QEMU through VmRuntime.

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "host_agent/image_catalog.h"
#include "host_agent/qmp_client.h"

namespace ppn::host {

// Everything that decides what a template's saved state means; any change makes a new key.
struct TemplateParams {
  Image image;
  uint32_t vcpus = 1;
  uint32_t memory_mib = 128;
  uint32_t disk_gib = 0;  // 0: the image's size
  bool kvm = false;
  std::string qemu_version;          // `qemu-system-x86_64 --version`'s first line
  std::vector<std::string> devices;  // the -machine and -device values of the VM's command line
};

// SHA-256 of a file, hex; cached by path, size, mtime and inode. Thread-safe.
class FileDigests {
 public:
  // NOT_FOUND if the file is missing.
  absl::StatusOr<std::string> Sha256(const std::string& path);

 private:
  struct Seen {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    ino_t inode = 0;
    std::string digest;
  };
  absl::Mutex mu_;
  std::map<std::string, Seen> seen_ ABSL_GUARDED_BY(mu_);
};

// The template key of `params`: 32 hex digits of a SHA-256 over the parameters and the
// digests of the image's files. The files' errors (NOT_FOUND) otherwise.
absl::StatusOr<std::string> TemplateKey(const TemplateParams& params, FileDigests* digests);

// One installed template's files.
struct Template {
  std::string key;
  std::string image;
  std::string dir;
  std::string memory_path() const { return dir + "/memory"; }
  std::string state_path() const { return dir + "/state"; }
  std::string disk_path() const { return dir + "/disk.qcow2"; }
  std::string seed_path() const { return dir + "/seed.iso"; }
};

// TemplateStore keeps the templates of one state directory in `dir` (STATE/templates).
// Thread-safe; two stores must not share a directory.
class TemplateStore {
 public:
  explicit TemplateStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }

  // Template `key` if it is installed and every file matches its manifest (the memory file's
  // digest is checked once per change of the file, the others on every call). NOT_FOUND when
  // it was never made; DATA_LOSS naming the damage when a file is missing or differs (the
  // template is then removed, so that it is made again).
  absl::StatusOr<Template> Find(const std::string& key);
  // A fresh, empty directory to build template `key` in (STATE/templates/.build-<key>-<n>).
  absl::StatusOr<std::string> NewBuildDir(const std::string& key);
  // Writes the manifest of the files in `build_dir` (memory, state, disk.qcow2, seed.iso)
  // and renames it to the template's directory (replacing an older copy). INTERNAL if a
  // file is missing or the rename fails; the build directory is removed either way.
  absl::StatusOr<Template> Install(const std::string& build_dir, const std::string& key, const std::string& image);
  // Removes template `key` (a missing one is fine).
  void Remove(const std::string& key);
  // Removes build directories left by an agent that died making a template.
  void SweepBuilds();
  // Installed template keys.
  std::vector<std::string> Keys() const;
  FileDigests* digests() { return &digests_; }

 private:
  const std::string dir_;
  FileDigests digests_;
};

// The identity a clone is given after its restore (the template's must not survive).
struct GuestIdentity {
  std::string hostname;
  std::string seed_hex;   // 32 random bytes, hex: the guest mixes them into its CRNG and reseeds
  std::string user_data;  // SECRET: the tenant's user-data
};
// The identity channel's message for `identity` ("hostname X\nseed HEX\nuser-data B64\nend\n").
std::string EncodeIdentity(const GuestIdentity& identity);
// A new identity for `hostname` with a fresh seed; INTERNAL without randomness.
absl::StatusOr<GuestIdentity> NewIdentity(const std::string& hostname, const std::string& user_data);
// A random RFC 4122 version-4 UUID for the VM Generation ID; "" without randomness.
std::string NewVmGenerationId();

// A connection to a VM's identity channel (its QEMU's socket), retried until `timeout`.
// UNAVAILABLE if it never answers. The caller closes the descriptor.
absl::StatusOr<int> ConnectIdentityChannel(const std::string& socket_path, absl::Duration timeout);
// Reads lines from `fd` until one starts with `prefix` (kept in `*line` when given);
// DEADLINE_EXCEEDED after `timeout`, UNAVAILABLE if the channel closes.
absl::Status WaitForChannelLine(int fd, const std::string& prefix, absl::Duration timeout, std::string* line = nullptr);
absl::Status WriteChannel(int fd, const std::string& data);

// With a template's QEMU running and ready: pauses it and saves its device state (not its
// memory, which is in the shared file) to `state_fd`. FAILED_PRECONDITION with QEMU's reason.
absl::Status SaveTemplateState(QmpClient* qmp, int state_fd, absl::Duration timeout);
// With a clone's QEMU waiting (-incoming defer, memory mapped from the template): loads the
// device state from `state_fd` and leaves the guest paused, ready to continue.
absl::Status LoadTemplateState(QmpClient* qmp, int state_fd, absl::Duration timeout);

}  // namespace ppn::host
