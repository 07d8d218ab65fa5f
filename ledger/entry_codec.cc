#include "ledger/entry_codec.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace ppn::ledger {
namespace {

constexpr uint8_t kVersion = 1;

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

void PutStr(std::string* out, absl::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  bool U8(uint8_t* v) {
    if (data_.empty()) return false;
    *v = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return true;
  }
  bool U32(uint32_t* v) {
    if (data_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v = (*v << 8) | static_cast<uint8_t>(data_[i]);
    data_.remove_prefix(4);
    return true;
  }
  bool I64(int64_t* v) {
    if (data_.size() < 8) return false;
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u = (u << 8) | static_cast<uint8_t>(data_[i]);
    data_.remove_prefix(8);
    *v = static_cast<int64_t>(u);
    return true;
  }
  bool Str(std::string* s) {
    uint32_t n = 0;
    if (!U32(&n) || data_.size() < n) return false;
    s->assign(data_.data(), n);
    data_.remove_prefix(n);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  absl::string_view data_;
};

}  // namespace

std::string EncodeLeaf(const ppn::ledger::v1::Entry& entry) {
  std::string out;
  out.push_back(static_cast<char>(kVersion));
  PutStr(&out, entry.kind());
  PutStr(&out, entry.actor());
  int64_t micros = entry.append_time().seconds() * 1000000 + entry.append_time().nanos() / 1000;
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>(static_cast<uint64_t>(micros) >> shift));
  }
  PutStr(&out, entry.tenant_id());
  PutStr(&out, entry.subject());
  out.push_back(static_cast<char>(entry.outcome()));
  std::map<std::string, std::string> sorted(entry.attributes().begin(), entry.attributes().end());
  PutU32(&out, static_cast<uint32_t>(sorted.size()));
  for (const auto& [k, v] : sorted) {
    PutStr(&out, k);
    PutStr(&out, v);
  }
  return out;
}

absl::StatusOr<ppn::ledger::v1::Entry> DecodeLeaf(absl::string_view leaf) {
  auto bad = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("leaf is not a canonical entry: ", what));
  };
  Reader r(leaf);
  ppn::ledger::v1::Entry entry;
  uint8_t version = 0, outcome = 0;
  int64_t micros = 0;
  uint32_t count = 0;
  std::string kind, actor, tenant, subject;
  if (!r.U8(&version) || version != kVersion) return bad("unknown version");
  if (!r.Str(&kind) || !r.Str(&actor) || !r.I64(&micros) || !r.Str(&tenant) || !r.Str(&subject) || !r.U8(&outcome) ||
      !r.U32(&count)) {
    return bad("truncated");
  }
  if (!ppn::ledger::v1::Outcome_IsValid(outcome)) return bad("unknown outcome");
  entry.set_kind(kind);
  entry.set_actor(actor);
  entry.mutable_append_time()->set_seconds(micros / 1000000);
  entry.mutable_append_time()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
  entry.set_tenant_id(tenant);
  entry.set_subject(subject);
  entry.set_outcome(static_cast<ppn::ledger::v1::Outcome>(outcome));
  std::string previous;
  for (uint32_t i = 0; i < count; ++i) {
    std::string k, v;
    if (!r.Str(&k) || !r.Str(&v)) return bad("truncated attributes");
    if (i > 0 && k <= previous) return bad("attributes not in canonical order");
    (*entry.mutable_attributes())[k] = v;
    previous = k;
  }
  if (!r.done()) return bad("trailing bytes");
  return entry;
}

}  // namespace ppn::ledger
