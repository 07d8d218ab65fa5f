#include "tools/ppnctl/progress.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ppn::ppnctl {

using ppn::types::v1::MigrationProgress;

void ProgressLine::Update(const std::string& text) {
  if (terminal_) {
    std::fprintf(out_, "\r\033[K%s", text.c_str());
    open_ = true;
  } else if (text != last_) {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  last_ = text;
  std::fflush(out_);
}

void ProgressLine::Finish() {
  if (!open_) return;
  std::fputs("\n", out_);
  std::fflush(out_);
  open_ = false;
}

ProgressLine& StderrProgress() {
  static auto* line = new ProgressLine(stderr, isatty(2) != 0);
  return *line;
}

bool IsFinal(const MigrationProgress& p) {
  return p.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED || p.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED;
}

std::string DescribeProgress(const MigrationProgress& p, bool plain) {
  std::string phase(absl::StripPrefix(ppn::types::v1::MigrationPhase_Name(p.phase()), "MIGRATION_PHASE_"));
  uint64_t done = p.transferred_bytes(), left = p.remaining_bytes();
  int pct = IsFinal(p) ? 100 : (done + left == 0 ? 0 : static_cast<int>(100 * done / (done + left)));
  std::string who = p.vm_id().empty() ? "" : p.vm_id() + " ";
  if (plain) return absl::StrCat(who, phase, " ", pct / 10 * 10, "%");
  return absl::StrCat(who, phase, " [", std::string(pct / 5, '#'), std::string(20 - pct / 5, ' '), "] ", pct, "%  ",
                      done >> 20, " MiB sent");
}

}  // namespace ppn::ppnctl
