#include "common/spiffe_id.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ppn {

std::string SpiffeId::ToString() const { return absl::StrCat("spiffe://", mesh, "/", role, "/", name); }

bool IsValidIdPart(absl::string_view part) {
  if (part.empty() || part.size() > 63) return false;
  for (char c : part) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<SpiffeId> ParseSpiffeId(absl::string_view uri) {
  constexpr absl::string_view kScheme = "spiffe://";
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("bad SPIFFE id \"", uri.substr(0, 200), "\": ", why));
  };
  if (!absl::StartsWith(uri, kScheme)) return bad("must start with spiffe://");
  std::vector<absl::string_view> parts = absl::StrSplit(uri.substr(kScheme.size()), '/');
  if (parts.size() != 3) return bad("want spiffe://<mesh>/<role>/<name>");
  for (absl::string_view p : parts) {
    if (!IsValidIdPart(p)) return bad("each part must be 1-63 characters of [a-z0-9.-]");
  }
  return SpiffeId{std::string(parts[0]), std::string(parts[1]), std::string(parts[2])};
}

}  // namespace ppn
