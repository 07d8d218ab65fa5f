#include "tools/ppnctl/verb_table.h"

#include <set>

#include "absl/strings/str_join.h"
#include "catch2/catch.hpp"
#include "tools/ppnctl/request_builder.h"

namespace ppn::ppnctl {
namespace {

TEST_CASE("every verb calls a real rpc with real fields or runs locally", "[ppnctl][verb_table]") {
  const Api& api = Api::Get();
  for (const Verb& v : Verbs()) {
    INFO(Usage(v));
    CHECK_FALSE(v.help.empty());
    CHECK((v.run == nullptr) != v.service.empty());
    CHECK(v.arg_fields.size() <= v.args.size());
    if (v.service.empty()) {
      CHECK(v.arg_fields.empty());
      CHECK(v.defaults.empty());
      continue;
    }
    absl::StatusOr<const Command*> c = api.Find(v.service, v.rpc);
    REQUIRE(c.ok());
    const google::protobuf::Descriptor* request = (*c)->method->input_type();
    for (const std::string& f : v.arg_fields) CHECK(IsFieldPath(request, f));
    for (const auto& [alias, field] : v.aliases) {
      CHECK(IsFieldPath(request, field));
      CHECK_FALSE(IsFieldPath(request, alias));  // an alias must not hide a field
    }
    for (const auto& [field, value] : v.defaults) {
      auto m = api.NewMessage(request);
      CHECK(SetField(m.get(), field, value).ok());
    }
  }
}

TEST_CASE("each verb is in the table once and hides no rpc", "[ppnctl][verb_table]") {
  std::set<std::string> seen;
  for (const Verb& v : Verbs()) {
    std::string words = absl::StrJoin(v.words, " ");
    INFO(words);
    CHECK(seen.insert(words).second);
    if (v.words.size() >= 2) CHECK_FALSE(Api::Get().Find(v.words[0], v.words[1]).ok());
  }
  for (const char* daily :
       {"vm create", "vm list", "vm get", "vm egress", "vm destroy", "node list", "node drain", "node approve",
        "migrate", "pin", "unpin", "ledger checkpoint", "ledger tail", "ledger verify", "completion bash", "help"}) {
    CHECK(seen.count(daily) == 1);
  }
}

}  // namespace
}  // namespace ppn::ppnctl
