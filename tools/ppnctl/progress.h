#pragma once

// A progress line on stderr for the long calls (migrate, node drain). On a terminal it is one
// line rewritten in place ("\r" and clear-to-end, so a shorter update leaves nothing of a
// longer one behind); anywhere else (a pipe, a log file) each change is a plain line of its
// own and no control character is ever written. Not thread-safe: one per call, used from the
// thread that reads the responses.

#include <cstdio>
#include <string>

#include "ppn/types/v1/types.pb.h"

namespace ppn::ppnctl {

class ProgressLine {
 public:
  // Writes to `out` (not owned); `terminal`: whether `out` is a TTY.
  ProgressLine(FILE* out, bool terminal) : out_(out), terminal_(terminal) {}
  ~ProgressLine() { Finish(); }

  // Shows `text` in place of the last update (a terminal), or as a new line when it differs
  // from the last one printed (otherwise).
  void Update(const std::string& text);
  // Ends the line on a terminal, so what follows starts on a fresh one.
  void Finish();

 private:
  FILE* out_;
  bool terminal_;
  bool open_ = false;  // a terminal line is shown and not yet ended
  std::string last_;
};

// The process's progress line on stderr (a TTY or not, as stderr is).
ProgressLine& StderrProgress();

// "vm-1 TRANSFERRING [#####     ] 50%  64 MiB sent"; `plain` leaves out the bar and shows the
// percentage in steps of 10, so a log gets a line per step, not per message.
std::string DescribeProgress(const ppn::types::v1::MigrationProgress& progress, bool plain);
// Whether that progress is the migration's last (completed or failed).
bool IsFinal(const ppn::types::v1::MigrationProgress& progress);

}  // namespace ppn::ppnctl
