#include "tools/ppnctl/verb.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/ppnctl/request_builder.h"
#include "tools/ppnctl/suggest.h"

namespace ppn::ppnctl {
namespace {

bool Variadic(const Verb& v) { return !v.args.empty() && absl::EndsWith(v.args.back(), "..."); }

bool Begins(const std::vector<std::string>& words, const std::vector<std::string>& prefix) {
  return prefix.size() <= words.size() && std::equal(prefix.begin(), prefix.end(), words.begin());
}

// The second words of the verbs whose first word is `first`: "create", "list", ... for "vm".
std::vector<std::string> GroupVerbs(const std::vector<Verb>& verbs, const std::string& first) {
  std::vector<std::string> out;
  for (const Verb& v : verbs) {
    if (v.words.size() >= 2 && v.words[0] == first) out.push_back(v.words[1]);
  }
  return out;
}

std::vector<std::string> ServiceRpcs(const Api& api, const std::string& service) {
  std::vector<std::string> out;
  for (const Command& c : api.commands()) {
    if (c.service_command == service) out.push_back(c.rpc_command);
  }
  return out;
}

bool IsService(const Api& api, const std::string& word) {
  std::vector<std::string> s = api.Services();
  return std::find(s.begin(), s.end(), word) != s.end();
}

}  // namespace

absl::StatusOr<const Verb*> FormFor(const Verb* verb, const std::vector<std::pair<std::string, std::string>>& flags) {
  auto given = [&flags](const std::string& name) {
    for (const auto& [flag, value] : flags) {
      if (flag == name && value != "false") return true;
    }
    return false;
  };
  if (verb == nullptr || verb->form == nullptr || !given(verb->form_flag)) return verb;
  for (const std::string& required : verb->form->required_flags) {
    if (!given(required)) {
      return absl::InvalidArgumentError(absl::StrCat("ppnctl ", Usage(*verb->form), ": --", verb->form_flag,
                                                     " acts on another tenant's VM, which needs --", required));
    }
  }
  return verb->form;
}

std::string Usage(const Verb& verb) {
  std::vector<std::string> parts = verb.words;
  for (const std::string& a : verb.args) parts.push_back(absl::EndsWith(a, "...") ? "[" + a + "]" : a);
  if (!verb.flags.empty()) parts.push_back(verb.flags);
  return absl::StrJoin(parts, " ");
}

std::vector<std::string> AcceptedFlags(const Verb* verb, const Command& command) {
  std::vector<std::string> out = FieldPaths(command.method->input_type());
  if (verb != nullptr) {
    for (const auto& [alias, field] : verb->aliases) out.push_back(alias);
    for (const std::string& f : verb->local_flags) out.push_back(f);
  }
  out.push_back("json");
  return out;
}

absl::StatusOr<Resolved> Resolve(const std::vector<Verb>& verbs, const Api& api,
                                 const std::vector<std::string>& words) {
  if (words.empty()) return absl::InvalidArgumentError("no verb given");
  const Verb* best = nullptr;
  for (const Verb& v : verbs) {
    if (Begins(words, v.words) && (best == nullptr || v.words.size() > best->words.size())) best = &v;
  }
  Resolved r;
  if (best != nullptr) {
    r.verb = best;
    r.args.assign(words.begin() + static_cast<long>(best->words.size()), words.end());
    if (!best->service.empty()) {
      absl::StatusOr<const Command*> c = api.Find(best->service, best->rpc);
      if (!c.ok()) return absl::InternalError(absl::StrCat("verb ", Usage(*best), ": ", c.status().message()));
      r.command = *c;
    }
    return r;
  }
  const std::string& first = words[0];
  std::vector<std::string> group = GroupVerbs(verbs, first);
  bool service = IsService(api, first);
  if (words.size() == 1 && (service || !group.empty())) {
    r.group = first;
    return r;
  }
  if (service) {
    absl::StatusOr<const Command*> c = api.Find(first, words[1]);
    if (c.ok()) {
      r.command = *c;
      r.args.assign(words.begin() + 2, words.end());
      return r;
    }
    std::vector<std::string> rpcs = ServiceRpcs(api, first);
    std::vector<std::string> all = rpcs;
    all.insert(all.end(), group.begin(), group.end());
    std::string msg = absl::StrCat("unknown rpc \"", words[1], "\" of ", first, DidYouMean(words[1], all),
                                   "; rpcs: ", absl::StrJoin(rpcs, ", "));
    if (!group.empty()) absl::StrAppend(&msg, "; verbs: ", absl::StrJoin(group, ", "));
    return absl::NotFoundError(msg);
  }
  if (!group.empty()) {
    return absl::NotFoundError(absl::StrCat("unknown verb \"", first, " ", words[1], "\"",
                                            DidYouMean(words[1], group, first + " "), "; ", first,
                                            " verbs: ", absl::StrJoin(group, ", ")));
  }
  std::vector<std::string> firsts;
  for (const Verb& v : verbs) {
    if (std::find(firsts.begin(), firsts.end(), v.words[0]) == firsts.end()) firsts.push_back(v.words[0]);
  }
  std::vector<std::string> services = api.Services();
  std::vector<std::string> all = firsts;
  all.insert(all.end(), services.begin(), services.end());
  return absl::NotFoundError(absl::StrCat("unknown verb \"", first, "\"", DidYouMean(first, all), "; verbs: ",
                                          absl::StrJoin(firsts, ", "), "; services: ", absl::StrJoin(services, ", ")));
}

absl::Status CheckArguments(const Resolved& r) {
  if (!r.group.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(r.group, " needs a verb or an rpc: ppnctl ", r.group, " --help lists them"));
  }
  if (r.verb == nullptr) {
    if (r.args.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", r.args[0], "\": ppnctl ",
                                                   r.command->service_command, " ", r.command->rpc_command,
                                                   " takes flags only (--field=value)"));
  }
  const Verb& v = *r.verb;
  size_t fixed = Variadic(v) ? v.args.size() - 1 : v.args.size();
  if (r.args.size() < fixed) {
    return absl::InvalidArgumentError(absl::StrCat("missing ", v.args[r.args.size()], "; usage: ppnctl ", Usage(v)));
  }
  if (r.args.size() > fixed && !Variadic(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument \"", r.args[fixed], "\"; usage: ppnctl ", Usage(v)));
  }
  return absl::OkStatus();
}

}  // namespace ppn::ppnctl
