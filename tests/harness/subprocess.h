#pragma once

// Subprocess runs a real binary for integration tests: stdout and stderr to a log file,
// killed (SIGKILL) and reaped on destruction so no process outlives its test.

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace ppn::testing {

// The path of a binary or data file in this test's runfiles, e.g. "ledger/ledger".
std::string RunfilePath(const std::string& workspace_relative);

class Subprocess {
 public:
  // Starts argv[0] (found on PATH if it has no slash) with argv; output appended to
  // `log_path`. Throws if fork/exec fails.
  Subprocess(std::vector<std::string> argv, const std::string& log_path);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `sig`.
  void Signal(int sig);
  // Waits up to `timeout` for exit; returns the wait status, or -1 on timeout.
  int Wait(absl::Duration timeout);
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

// Runs argv to completion, its output to `log_path`; killed after `timeout`. Returns the exit
// code (-1 when it did not exit normally, e.g. killed) and the output.
struct RunResult {
  int exit_code = -1;
  std::string output;
};
RunResult Run(const std::vector<std::string>& argv, const std::string& log_path, absl::Duration timeout);

// The whole content of `file`, or "" when it cannot be read.
std::string ReadAll(const std::string& file);

// Polls `path` until it holds a port number (servers write --port_file once serving).
// Throws after `timeout`.
int WaitForPortFile(const std::string& path, absl::Duration timeout);

}  // namespace ppn::testing
