#include "tools/ppnctl/known_ledgers.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "ledger/merkle.h"

namespace ppn::ppnctl {
namespace {

constexpr char kHeader[] =
    "# Ledgers `ppnctl ledger verify` has pinned, like ssh's known_hosts: origin, verifier key,\n"
    "# the last verified checkpoint (tree size, root hash), endpoints. Delete a line to trust\n"
    "# that ledger's key again on first use.\n";

bool Clean(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (absl::ascii_isspace(c) || c == ',' || absl::ascii_iscntrl(c)) return false;
  }
  return true;
}

// mkdir -p with mode 0700 for what it creates.
absl::Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return absl::OkStatus();
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) return absl::OkStatus();
  size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    absl::Status parent = MakeDirs(dir.substr(0, slash));
    if (!parent.ok()) return parent;
  }
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<KnownLedgers> KnownLedgers::Load(const std::string& path) {
  KnownLedgers known;
  known.path_ = path;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) return known;
    return text.status();
  }
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(*text, '\n')) {
    ++number;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    KnownLedger k;
    absl::StatusOr<std::string> root = f.size() != 5 ? absl::InvalidArgumentError("")
                                       : f[3] == "-" ? absl::StatusOr<std::string>("")
                                                     : ledger::FromHex(f[3]);
    if (f.size() != 5 || !absl::SimpleAtoi(f[2], &k.tree_size) || !root.ok() ||
        (k.tree_size > 0 && root->size() != ledger::kHashBytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number, ": want \"<origin> <verifier key> <tree size> <root hash hex> <endpoints>\""));
    }
    k.origin = f[0];
    k.verifier_key = f[1];
    k.root_hash = *root;
    if (f[4] != "-") k.endpoints = absl::StrSplit(f[4], ',', absl::SkipEmpty());
    known.ledgers_.push_back(std::move(k));
  }
  return known;
}

const KnownLedger* KnownLedgers::Find(absl::string_view origin) const {
  for (const KnownLedger& k : ledgers_) {
    if (k.origin == origin) return &k;
  }
  return nullptr;
}

const KnownLedger* KnownLedgers::FindByEndpoint(absl::string_view endpoint) const {
  for (const KnownLedger& k : ledgers_) {
    for (const std::string& e : k.endpoints) {
      if (e == endpoint) return &k;
    }
  }
  return nullptr;
}

absl::Status KnownLedgers::Put(KnownLedger ledger) {
  if (!Clean(ledger.origin) || !Clean(ledger.verifier_key)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot remember ledger \"", absl::CEscape(ledger.origin),
                                                   "\": its origin and key must be non-empty words"));
  }
  for (const std::string& e : ledger.endpoints) {
    if (!Clean(e))
      return absl::InvalidArgumentError(absl::StrCat("cannot remember endpoint \"", absl::CEscape(e), "\""));
  }
  for (KnownLedger& k : ledgers_) {
    if (k.origin == ledger.origin) {
      k = std::move(ledger);
      return absl::OkStatus();
    }
  }
  ledgers_.push_back(std::move(ledger));
  return absl::OkStatus();
}

std::string KnownLedgers::Format() const {
  std::string out = kHeader;
  for (const KnownLedger& k : ledgers_) {
    absl::StrAppend(&out, k.origin, " ", k.verifier_key, " ", k.tree_size, " ",
                    k.root_hash.empty() ? "-" : ledger::ToHex(k.root_hash), " ",
                    k.endpoints.empty() ? "-" : absl::StrJoin(k.endpoints, ","), "\n");
  }
  return out;
}

absl::Status KnownLedgers::Save() const {
  size_t slash = path_.find_last_of('/');
  if (slash != std::string::npos) {
    absl::Status dirs = MakeDirs(path_.substr(0, slash));
    if (!dirs.ok()) return dirs;
  }
  return WriteFileAtomically(path_, Format(), 0600);
}

}  // namespace ppn::ppnctl
