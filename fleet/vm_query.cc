#include "fleet/vm_query.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ppn::fleet {
namespace {

bool BareChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

// A recursive-descent reader over the filter that knows where it is, so every error names the
// position (from 1) and what the grammar wanted there.
class FilterReader {
 public:
  explicit FilterReader(const std::string& s) : s_(s) {}

  absl::StatusOr<VmFilter> Read() {
    VmFilter f;
    SkipSpaces();
    if (AtEnd()) return f;
    while (true) {
      size_t term_start = pos_;
      std::string field = Word(/*field=*/true);
      if (field.empty()) return Expected("a field (state, name or labels.KEY)");
      if (AtEnd() || s_[pos_] != '=') return Expected("\"=\"");
      ++pos_;
      size_t value_start = pos_;
      std::string value;
      if (!AtEnd() && s_[pos_] == '"') {
        size_t close = s_.find('"', pos_ + 1);
        if (close == std::string::npos) return Expected("a closing '\"'", s_.size());
        value = s_.substr(pos_ + 1, close - pos_ - 1);
        pos_ = close + 1;
      } else {
        value = Word(/*field=*/false);
        if (value.empty()) return Expected("a value ([A-Za-z0-9_.-]+ or \"quoted\")");
      }
      if (field == "state") {
        if (f.state.has_value()) return Twice("state", term_start);
        std::string full = absl::StartsWith(value, "VM_STATE_") ? value : "VM_STATE_" + value;
        ppn::types::v1::VmState state;
        if (!ppn::types::v1::VmState_Parse(full, &state) || state == ppn::types::v1::VM_STATE_UNSPECIFIED) {
          pos_ = value_start;
          return Expected(
              "a VM state (PENDING, STARTING, RUNNING, MIGRATING, STOPPING, STOPPED, FAILED, UNKNOWN, LOST, ...)");
        }
        f.state = state;
      } else if (field == "name") {
        if (f.name.has_value()) return Twice("name", term_start);
        f.name = value;
      } else if (absl::StartsWith(field, "labels.") && field.size() > 7) {
        std::string key = field.substr(7);
        if (f.labels.count(key) > 0) return Twice(field, term_start);
        f.labels[key] = value;
      } else {
        pos_ = term_start;
        return Expected("a field (state, name or labels.KEY)");
      }
      size_t before_spaces = pos_;
      SkipSpaces();
      if (AtEnd()) return f;
      if (pos_ == before_spaces) return Expected("\" AND \" or the end");
      if (s_.compare(pos_, 3, "AND") != 0 || (pos_ + 3 < s_.size() && s_[pos_ + 3] != ' ')) {
        return Expected("\"AND\" (the only operator)");
      }
      pos_ += 3;
      SkipSpaces();
    }
  }

 private:
  bool AtEnd() const { return pos_ >= s_.size(); }
  void SkipSpaces() {
    while (!AtEnd() && s_[pos_] == ' ') ++pos_;
  }
  // A field may hold '/' too (label keys such as app.example.com/tier).
  std::string Word(bool field) {
    size_t start = pos_;
    while (!AtEnd() && (BareChar(s_[pos_]) || (field && s_[pos_] == '/'))) ++pos_;
    return s_.substr(start, pos_ - start);
  }
  absl::Status Expected(absl::string_view what) { return Expected(what, pos_); }
  absl::Status Expected(absl::string_view what, size_t at) const {
    std::string found =
        at >= s_.size() ? "the end"
                        : absl::StrCat("\"", absl::CHexEscape(s_.substr(at, 16)), s_.size() - at > 16 ? "...\"" : "\"");
    return absl::InvalidArgumentError(
        absl::StrCat("filter: at position ", at + 1, ": expected ", what, ", found ", found));
  }
  absl::Status Twice(absl::string_view field, size_t at) const {
    return absl::InvalidArgumentError(
        absl::StrCat("filter: at position ", at + 1, ": ", field, " is given twice (terms are ANDed: one each)"));
  }

  const std::string& s_;
  size_t pos_ = 0;
};

constexpr size_t kMacBytes = 16;

std::string Encode(const std::string& after, const std::string& mac) {
  return absl::StrCat(absl::WebSafeBase64Escape(after), ".", absl::WebSafeBase64Escape(mac));
}

}  // namespace

bool VmFilter::Matches(const ppn::fleet::v1::VmRecord& record, ppn::types::v1::VmState visible_state) const {
  if (state.has_value() && *state != visible_state) return false;
  if (name.has_value() && *name != record.name() && *name != record.vm_id()) return false;
  for (const auto& [k, v] : labels) {
    auto found = record.spec().labels().find(k);
    if (found == record.spec().labels().end() || found->second != v) return false;
  }
  return true;
}

absl::StatusOr<VmFilter> ParseVmFilter(const std::string& filter) {
  if (filter.size() > 1024) return absl::InvalidArgumentError("filter: longer than 1024 characters");
  return FilterReader(filter).Read();
}

std::string PageTokens::Binding(const std::string& scope, const ppn::fleet::v1::ListVmsRequest& request) {
  // Length-prefixed parts: no two different requests bind alike.
  std::string out;
  auto part = [&out](absl::string_view s) { absl::StrAppend(&out, s.size(), ":", s, ";"); };
  part(scope);
  part(request.filter());
  part(request.node_id());
  part(request.include_stopped() ? "1" : "0");
  std::map<std::string, std::string> labels(request.label_selector().begin(), request.label_selector().end());
  for (const auto& [k, v] : labels) {
    part(k);
    part(v);
  }
  return out;
}

std::string PageTokens::Mac(const std::string& binding, const std::string& after) const {
  std::string message = absl::StrCat("ppn.fleet.ListVms.page.v1\n", binding.size(), ":", binding, after);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), reinterpret_cast<const unsigned char*>(message.data()),
       message.size(), md, &len);
  return std::string(reinterpret_cast<const char*>(md), std::min<size_t>(len, kMacBytes));
}

std::string PageTokens::Make(const std::string& binding, const std::string& after) const {
  return Encode(after, Mac(binding, after));
}

absl::StatusOr<std::string> PageTokens::Parse(const std::string& binding, const std::string& token) const {
  const absl::Status invalid = absl::InvalidArgumentError(
      "page_token is not valid for this list: pass the next_page_token of the previous page unchanged, with the same "
      "filter (a token from before a fleet restart must start again from the first page)");
  size_t dot = token.find('.');
  if (key_.empty() || token.size() > 256 || dot == std::string::npos) return invalid;
  std::string after, mac;
  if (!absl::WebSafeBase64Unescape(token.substr(0, dot), &after) ||
      !absl::WebSafeBase64Unescape(token.substr(dot + 1), &mac) || mac.size() != kMacBytes) {
    return invalid;
  }
  // One spelling per token: unused low bits of the last base64 digit must not make another.
  if (token != Encode(after, mac)) return invalid;
  std::string want = Mac(binding, after);
  if (CRYPTO_memcmp(want.data(), mac.data(), kMacBytes) != 0) return invalid;
  return after;
}

}  // namespace ppn::fleet
