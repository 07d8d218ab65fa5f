#include "tools/ppnctl/help.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "tools/ppnctl/settings.h"

namespace ppn::ppnctl {
namespace {

std::string FieldHelp(const Api& api, const google::protobuf::Descriptor* d, const std::string& prefix, int depth) {
  std::string out;
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    std::string type = f->is_map() ? "key=value" : f->type_name();
    if (f->enum_type()) type = "enum";
    if (f->message_type() && !f->is_map()) type = f->message_type()->name();
    std::string comment = absl::StrReplaceAll(api.Comment(f), {{"\n", " "}});
    absl::StrAppend(&out, "  --", prefix, f->name(), " (", f->is_repeated() && !f->is_map() ? "repeated " : "", type,
                    ")  ", comment, "\n");
    if (f->message_type() && !f->is_map() && !f->is_repeated() && depth < 2 &&
        !absl::StartsWith(f->message_type()->full_name(), "google.protobuf.")) {
      out += FieldHelp(api, f->message_type(), prefix + f->name() + ".", depth + 1);
    }
  }
  return out;
}

std::string RequestFields(const Command& c, const Api& api) {
  return absl::StrCat("Request fields (", c.method->input_type()->full_name(), "):\n",
                      FieldHelp(api, c.method->input_type(), "", 0));
}

// Two aligned columns: usage, then help.
std::string Rows(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.first.size());
  std::string out;
  for (const auto& [left, right] : rows) {
    absl::StrAppend(&out, absl::StrFormat("  %-*s  %s", static_cast<int>(width), left, right), "\n");
  }
  return out;
}

std::string VerbHelp(const Verb& v, const Command* c, const Api& api) {
  std::string out = absl::StrCat("ppnctl ", Usage(v), "\n\n", v.help, "\n");
  if (!v.details.empty()) absl::StrAppend(&out, "\n", v.details, "\n");
  if (c == nullptr) return out;
  absl::StrAppend(&out, "\nCalls ", c->service_command, " ", c->rpc_command, ": ",
                  absl::StrReplaceAll(api.Comment(c->method), {{"\n", " "}}), "\n");
  for (size_t i = 0; i < v.arg_fields.size() && i < v.args.size(); ++i) {
    absl::StrAppend(&out, "  ", v.args[i], " sets --", v.arg_fields[i], "\n");
  }
  for (const auto& [alias, field] : v.aliases) absl::StrAppend(&out, "  --", alias, " sets --", field, "\n");
  if (!v.defaults.empty()) {
    std::vector<std::string> d;
    for (const auto& [field, value] : v.defaults) d.push_back(absl::StrCat("--", field, "=", value));
    absl::StrAppend(&out, "  unless given: ", absl::StrJoin(d, " "), "\n");
  }
  absl::StrAppend(&out, "\n", RequestFields(*c, api));
  return out;
}

std::string GroupHelp(const std::string& group, const std::vector<Verb>& verbs, const Api& api) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const Verb& v : verbs) {
    if (v.words[0] == group && !absl::StartsWith(group, "__")) rows.emplace_back(Usage(v), v.help);
  }
  std::vector<std::string> rpcs;
  for (const Command& c : api.commands()) {
    if (c.service_command == group) rpcs.push_back(c.rpc_command);
  }
  std::string out;
  if (!rows.empty()) absl::StrAppend(&out, "Verbs:\n", Rows(rows));
  if (!rpcs.empty()) {
    if (!out.empty()) out += "\n";
    absl::StrAppend(&out, "RPCs of ", group, " (ppnctl ", group, " RPC --help for its fields):\n  ",
                    absl::StrJoin(rpcs, " "), "\n");
  }
  return out;
}

}  // namespace

std::string RpcHelp(const Command& c, const Api& api) {
  return absl::StrCat("ppnctl ", c.service_command, " ", c.rpc_command, " [--field=value ...]",
                      c.method->server_streaming() ? "   (streams responses as they arrive)" : "", "\n\n",
                      api.Comment(c.method), "\n\n", RequestFields(c, api));
}

std::string HelpFor(const Resolved& r, const std::vector<Verb>& verbs, const Api& api) {
  if (r.verb != nullptr) return VerbHelp(*r.verb, r.command, api);
  if (r.command != nullptr) return RpcHelp(*r.command, api);
  return GroupHelp(r.group, verbs, api);
}

std::string MainHelp(const std::vector<Verb>& verbs, const Api& api) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const Verb& v : verbs) {
    if (!absl::StartsWith(v.words[0], "__")) rows.emplace_back(Usage(v), v.help);  // __complete is for the shell
  }
  std::string out = absl::StrCat("ppnctl: the PPN operator CLI.\n\nDaily verbs (ppnctl VERB --help for its flags):\n",
                                 Rows(rows), "\nEvery RPC (ppnctl SERVICE RPC --help for its fields):\n");
  std::string service;
  for (const Command& c : api.commands()) {
    if (c.service_command != service) {
      service = c.service_command;
      absl::StrAppend(&out, "  ", service, ":");
    }
    absl::StrAppend(&out, " ", c.rpc_command);
    if (&c == &api.commands().back() || (&c + 1)->service_command != service) out += "\n";
  }
  rows.clear();
  for (const SettingSpec& s : SettingSpecs()) {
    std::string fallback = s.fallback.empty() ? "" : absl::StrCat(" (default ", s.fallback, ")");
    rows.emplace_back(absl::StrCat("--", s.name, s.value.empty() ? "" : "=", s.value), s.help + fallback);
  }
  absl::StrAppend(
      &out,
      "\nSettings: a flag, else PPN_<NAME> in the environment, else the current context (ppnctl config), else\n"
      "NAME=value in the config file, else the default. Endpoints: --endpoint, else PPN_<SERVICE>_ENDPOINT, else\n"
      "the context's <service>_endpoint= or endpoint=, else the file's <service>_endpoint=, else tools/ports.\n",
      Rows(rows), "\n-h or --help anywhere prints help and runs nothing.\n");
  return out;
}

}  // namespace ppn::ppnctl
