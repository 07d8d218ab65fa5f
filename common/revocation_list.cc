#include "common/revocation_list.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ppn {
namespace {

constexpr char kRevokeKind[] = "node.revoke";

// nlohmann's value() throws on a field of another type; a hand-edited file must not.
std::string StringField(const nlohmann::json& item, const char* key) {
  auto it = item.find(key);
  return it != item.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RevocationList>> RevocationList::Open(const std::string& path, std::string mesh) {
  std::unique_ptr<RevocationList> list(new RevocationList(path, std::move(mesh)));
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return list;
    return text.status();
  }
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("revoked") || !doc["revoked"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a revocation list (expected {\"revoked\": [...]})"));
  }
  absl::MutexLock l(&list->mu_);
  for (const nlohmann::json& item : doc["revoked"]) {
    Revocation r;
    if (item.is_object()) r.spiffe_id = StringField(item, "spiffe_id");
    if (!ParseSpiffeId(r.spiffe_id).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, " has a revocation without a valid spiffe_id"));
    }
    r.node = StringField(item, "node");
    auto index = item.find("ledger_index");
    if (index != item.end() && index->is_number_unsigned()) r.ledger_index = index->get<uint64_t>();
    r.reason = StringField(item, "reason");
    r.certificate_sha256 = StringField(item, "certificate_sha256");
    list->revoked_[r.spiffe_id] = std::move(r);
  }
  return list;
}

std::unique_ptr<RevocationList> RevocationList::InMemory(std::string mesh) {
  return std::unique_ptr<RevocationList>(new RevocationList("", std::move(mesh)));
}

absl::Status RevocationList::Check(const SpiffeId& peer) const {
  std::string id = peer.ToString();
  absl::ReaderMutexLock l(&mu_);
  auto it = revoked_.find(id);
  if (it == revoked_.end()) return absl::OkStatus();
  return absl::UnauthenticatedError(
      absl::StrCat("certificate of ", id, " was revoked (ledger entry ", it->second.ledger_index, ", node.revoke)"));
}

bool RevocationList::IsRevoked(const std::string& spiffe_id) const {
  absl::ReaderMutexLock l(&mu_);
  return revoked_.contains(spiffe_id);
}

absl::StatusOr<bool> RevocationList::Apply(const ppn::ledger::v1::Entry& entry) {
  if (entry.kind() != kRevokeKind || entry.outcome() != ppn::ledger::v1::OUTCOME_SUCCESS) return false;
  auto attr = [&](const char* key) {
    auto it = entry.attributes().find(key);
    return it == entry.attributes().end() ? std::string() : it->second;
  };
  std::string id = attr("spiffe_id");
  if (id.empty() || !ParseSpiffeId(id).ok()) {
    // Older entries name only the node; its identity is the host role's.
    if (!IsValidIdPart(entry.subject())) return false;
    id = SpiffeId{mesh_, "host", entry.subject()}.ToString();
  }
  absl::MutexLock l(&mu_);
  if (revoked_.contains(id)) return false;
  Revocation r;
  r.spiffe_id = id;
  r.node = entry.subject();
  r.ledger_index = entry.index();
  r.reason = attr("reason");
  r.certificate_sha256 = attr("certificate_sha256");
  revoked_[id] = std::move(r);
  PPN_RETURN_IF_ERROR(PersistLocked());
  return true;
}

std::vector<Revocation> RevocationList::List() const {
  absl::ReaderMutexLock l(&mu_);
  return SortedLocked();
}

std::vector<Revocation> RevocationList::SortedLocked() const {
  std::vector<Revocation> out;
  for (const auto& [_, r] : revoked_) out.push_back(r);
  std::sort(out.begin(), out.end(),
            [](const Revocation& a, const Revocation& b) { return a.ledger_index < b.ledger_index; });
  return out;
}

absl::Status RevocationList::PersistLocked() const {
  if (path_.empty()) return absl::OkStatus();
  nlohmann::json items = nlohmann::json::array();
  for (const Revocation& r : SortedLocked()) {
    items.push_back({{"spiffe_id", r.spiffe_id},
                     {"node", r.node},
                     {"ledger_index", r.ledger_index},
                     {"reason", r.reason},
                     {"certificate_sha256", r.certificate_sha256}});
  }
  nlohmann::json doc = {{"revoked", items}};
  return WriteFileAtomically(path_, doc.dump(2) + "\n", 0644);
}

}  // namespace ppn
