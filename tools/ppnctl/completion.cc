#include "tools/ppnctl/completion.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/ppnctl/settings.h"

namespace ppn::ppnctl {
namespace {

void AddOnce(std::vector<std::string>* list, const std::string& word) {
  if (std::find(list->begin(), list->end(), word) == list->end()) list->push_back(word);
}

std::string Flags(const std::vector<std::string>& names, const std::string& settings) {
  std::vector<std::string> out;
  for (const std::string& n : names) out.push_back("--" + n + "=");
  return absl::StrCat(absl::StrJoin(out, " "), out.empty() ? "" : " ", settings);
}

std::string Reply(const std::string& words) {
  return absl::StrCat("COMPREPLY=($(compgen -W \"", words, "\" -- \"$cur\"))");
}

}  // namespace

std::string BashCompletion(const std::vector<Verb>& verbs, const Api& api) {
  std::vector<std::string> settings_flags = {"--help"};
  for (const SettingSpec& s : SettingSpecs()) settings_flags.push_back("--" + s.name + "=");
  const std::string settings = absl::StrJoin(settings_flags, " ");

  std::vector<std::string> first;
  std::map<std::string, std::vector<std::string>> second;
  // The flags after "WORD1 WORD2" (a two-word verb or SERVICE RPC) or after "WORD1 " (a verb
  // of one word), most specific pattern first.
  std::vector<std::pair<std::string, std::string>> flags;
  for (const Verb& v : verbs) {
    AddOnce(&first, v.words[0]);
    if (v.words.size() >= 2) AddOnce(&second[v.words[0]], v.words[1]);
    std::vector<std::string> names;
    if (!v.service.empty()) names = AcceptedFlags(&v, **api.Find(v.service, v.rpc));
    std::string pattern = v.words.size() >= 2 ? absl::StrCat("\"", v.words[0], " ", v.words[1], "\"")
                                              : absl::StrCat("\"", v.words[0], " \"*");
    flags.emplace_back(pattern, Flags(names, settings));
  }
  for (const Command& c : api.commands()) {
    AddOnce(&first, c.service_command);
    AddOnce(&second[c.service_command], c.rpc_command);
    flags.emplace_back(absl::StrCat("\"", c.service_command, " ", c.rpc_command, "\""),
                       Flags(AcceptedFlags(nullptr, c), settings));
  }
  std::string out =
      "# bash completion for ppnctl: source <(ppnctl completion bash)\n"
      "_ppnctl() {\n"
      "  local cur=${COMP_WORDS[COMP_CWORD]}\n"
      "  if [[ $cur == -* ]]; then\n"
      "    compopt -o nospace\n"
      "    case \"${COMP_WORDS[1]} ${COMP_WORDS[2]}\" in\n";
  // Two-word patterns before the one-word ones ("migrate "*) that would also match them.
  std::stable_sort(flags.begin(), flags.end(),
                   [](const auto& a, const auto& b) { return (a.first.back() != '*') > (b.first.back() != '*'); });
  for (const auto& [pattern, words] : flags) absl::StrAppend(&out, "      ", pattern, ") ", Reply(words), " ;;\n");
  absl::StrAppend(&out, "      *) ", Reply(settings), " ;;\n    esac\n    return\n  fi\n  case $COMP_CWORD in\n",
                  "  1) ", Reply(absl::StrJoin(first, " ")), " ;;\n  2) case ${COMP_WORDS[1]} in\n");
  for (const std::string& w : first) {
    auto it = second.find(w);
    if (it != second.end()) absl::StrAppend(&out, "       ", w, ") ", Reply(absl::StrJoin(it->second, " ")), " ;;\n");
  }
  out += "     esac ;;\n  esac\n}\ncomplete -F _ppnctl ppnctl\n";
  return out;
}

}  // namespace ppn::ppnctl
