#pragma once

// Helpers for tests that run real QEMU guests through the real host_agent binary.

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/tls_credentials.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_pki.h"

namespace ppn::testing {

// A directory under /tmp (short paths: QMP sockets are limited to 108 bytes) holding a copy
// of the test guest and a catalog for it. On destruction it kills every process whose
// command line mentions the directory (QEMU left behind by a failed test) and removes it.
class GuestDir {
 public:
  GuestDir();
  ~GuestDir();
  const std::string& path() const { return path_; }
  std::string catalog() const { return path_ + "/catalog.json"; }

 private:
  std::string path_;
};

// Kills (SIGKILL) every process whose command line contains `needle`; returns how many.
int KillProcessesMentioning(const std::string& needle);
// Counts processes whose command line contains `needle`.
int CountProcessesMentioning(const std::string& needle);

// A running host_agent binary.
struct AgentProcess {
  std::unique_ptr<Subprocess> process;
  int port = 0;
  std::string state_dir;
};

// Starts host_agent for `node_id` with its state under `dir`/`node_id`. `extra` flags are
// appended (e.g. --advertised_memory_mib=1024).
AgentProcess StartAgent(TestPki& pki, const std::string& dir, const std::string& catalog, const std::string& node_id,
                        const std::vector<std::string>& extra = {});

// Starts another PPN server binary (path relative to the workspace, e.g. "fleet/fleet") with
// a certificate for `role`/`name`, state under `dir`/`name`, on 127.0.0.1:0.
AgentProcess StartService(TestPki& pki, const std::string& dir, const std::string& binary, const std::string& role,
                          const std::string& name, const std::vector<std::string>& extra);

// GET http://127.0.0.1:port/path, retried until `timeout`; returns the body or "" on failure.
std::string HttpGet(int port, const std::string& path, absl::Duration timeout);

// Waits until `file` contains `marker`; returns false after `timeout`.
bool WaitForFileContaining(const std::string& file, const std::string& marker, absl::Duration timeout);

}  // namespace ppn::testing
