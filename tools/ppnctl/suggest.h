#pragma once

// "Did you mean": the nearest known name to a mistyped one, for every unknown verb, word,
// flag and setting ppnctl refuses. Pure.

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace ppn::ppnctl {

// The candidate `word` most likely meant: one it is a prefix of (the shortest), else the
// nearest by edit distance if at most max(2, length / 3) edits away; "" when none is close.
std::string Nearest(absl::string_view word, const std::vector<std::string>& candidates);

// " (did you mean \"<prefix><nearest>\"?)", or "" when nothing is close.
std::string DidYouMean(absl::string_view word, const std::vector<std::string>& candidates,
                       absl::string_view prefix = "");

}  // namespace ppn::ppnctl
