#include "common/request_id.h"

#include <openssl/rand.h>

#include "absl/strings/escaping.h"

namespace ppn {
namespace {

thread_local std::string current;

}  // namespace

const std::string& CurrentRequestId() { return current; }

std::string NewRequestId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return "";
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

bool IsValidRequestId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

ScopedRequestId::ScopedRequestId(std::string id) : previous_(std::move(current)) { current = std::move(id); }

ScopedRequestId::~ScopedRequestId() { current = std::move(previous_); }

void SetCurrentRequestId(std::string id) { current = std::move(id); }

}  // namespace ppn
