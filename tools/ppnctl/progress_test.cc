#include "tools/ppnctl/progress.h"

#include <cstdio>

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

using ppn::types::v1::MigrationProgress;

// What `write` put in a file, as bytes.
template <typename F>
std::string Written(F write) {
  FILE* f = std::tmpfile();
  write(f);
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  std::fclose(f);
  return out;
}

MigrationProgress Progress(ppn::types::v1::MigrationPhase phase, uint64_t done, uint64_t left) {
  MigrationProgress p;
  p.set_vm_id("vm-1");
  p.set_phase(phase);
  p.set_transferred_bytes(done);
  p.set_remaining_bytes(left);
  return p;
}

TEST_CASE("on a terminal each update clears the line so a shorter one leaves nothing behind", "[ppnctl][progress]") {
  std::string out = Written([](FILE* f) {
    ProgressLine line(f, true);
    line.Update("a long first line");
    line.Update("short");
    line.Finish();
    line.Finish();
  });
  CHECK(out == "\r\033[Ka long first line\r\033[Kshort\n");
}

TEST_CASE("off a terminal progress is plain lines, one per change, without control characters", "[ppnctl][progress]") {
  std::string out = Written([](FILE* f) {
    ProgressLine line(f, false);
    line.Update(DescribeProgress(Progress(ppn::types::v1::MIGRATION_PHASE_MEMORY, 10, 90), true));
    line.Update(DescribeProgress(Progress(ppn::types::v1::MIGRATION_PHASE_MEMORY, 12, 88), true));
    line.Update(DescribeProgress(Progress(ppn::types::v1::MIGRATION_PHASE_MEMORY, 55, 45), true));
    line.Update(DescribeProgress(Progress(ppn::types::v1::MIGRATION_PHASE_COMPLETED, 100, 0), true));
    line.Finish();
  });
  CHECK(out == "vm-1 MEMORY 10%\nvm-1 MEMORY 50%\nvm-1 COMPLETED 100%\n");
  CHECK(out.find('\r') == std::string::npos);
  CHECK(out.find('\033') == std::string::npos);
}

TEST_CASE("the terminal line shows a bar, the percentage and what was sent", "[ppnctl][progress]") {
  CHECK(DescribeProgress(Progress(ppn::types::v1::MIGRATION_PHASE_DISK, 50 << 20, 50 << 20), false) ==
        "vm-1 DISK [##########          ] 50%  50 MiB sent");
  CHECK(IsFinal(Progress(ppn::types::v1::MIGRATION_PHASE_FAILED, 0, 0)));
  CHECK_FALSE(IsFinal(Progress(ppn::types::v1::MIGRATION_PHASE_SWITCHOVER, 0, 0)));
}

}  // namespace
}  // namespace ppn::ppnctl
