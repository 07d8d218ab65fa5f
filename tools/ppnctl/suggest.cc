#include "tools/ppnctl/suggest.h"

#include <algorithm>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ppn::ppnctl {
namespace {

// Levenshtein distance, ignoring case ("-O" is one keystroke from "-o", not two).
size_t EditDistance(absl::string_view a_in, absl::string_view b_in) {
  std::string a = absl::AsciiStrToLower(a_in), b = absl::AsciiStrToLower(b_in);
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string Nearest(absl::string_view word, const std::vector<std::string>& candidates) {
  if (word.empty()) return "";
  // A prefix is what someone who stopped typing early meant ("spec.memory" for
  // "spec.memory_mib"), even when the edit distance is large.
  const std::string* best = nullptr;
  for (const std::string& c : candidates) {
    if (c != word && absl::StartsWith(c, word) && (best == nullptr || c.size() < best->size())) best = &c;
  }
  if (best != nullptr) return *best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const std::string& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = &c;
    }
  }
  size_t allowed = std::max<size_t>(2, word.size() / 3);
  return best != nullptr && best_distance <= allowed ? *best : "";
}

std::string DidYouMean(absl::string_view word, const std::vector<std::string>& candidates, absl::string_view prefix) {
  std::string n = Nearest(word, candidates);
  return n.empty() ? "" : absl::StrCat(" (did you mean \"", prefix, n, "\"?)");
}

}  // namespace ppn::ppnctl
