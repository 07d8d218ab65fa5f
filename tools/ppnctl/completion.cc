#include "tools/ppnctl/completion.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
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

// What a verb's positional argument names live: "vms", "nodes", or "" (nothing to look up).
std::string LiveKind(const Verb& verb, const std::string& arg) {
  if (arg == "NODE") return "nodes";
  if (arg == "VM") return "vms";
  if (arg == "NAME" && verb.words[0] == "vm" && verb.words.size() > 1 && verb.words[1] != "create") return "vms";
  return "";
}

}  // namespace

bool IsHidden(const Verb& verb) { return absl::StartsWith(verb.words[0], "__"); }

std::string BashCompletion(const std::vector<Verb>& verbs, const Api& api) {
  std::vector<std::string> settings_flags = {"--help"};
  for (const SettingSpec& s : SettingSpecs()) settings_flags.push_back("--" + s.name + (s.value.empty() ? "" : "="));
  const std::string settings = absl::StrJoin(settings_flags, " ");

  std::vector<std::string> first;
  std::map<std::string, std::vector<std::string>> second;
  // The flags after "WORD1 WORD2" (a two-word verb or SERVICE RPC) or after "WORD1 " (a verb
  // of one word), most specific pattern first.
  std::vector<std::pair<std::string, std::string>> flags;
  // Where a live name completes: "2 vm get" (two words typed, they are "vm get") → "vms".
  std::vector<std::pair<std::string, std::string>> live;
  for (const Verb& v : verbs) {
    if (IsHidden(v)) continue;
    AddOnce(&first, v.words[0]);
    if (v.words.size() >= 2) AddOnce(&second[v.words[0]], v.words[1]);
    std::vector<std::string> names;
    if (!v.service.empty()) names = AcceptedFlags(&v, **api.Find(v.service, v.rpc));
    std::string pattern = v.words.size() >= 2 ? absl::StrCat("\"", v.words[0], " ", v.words[1], "\"")
                                              : absl::StrCat("\"", v.words[0], " \"*");
    flags.emplace_back(pattern, Flags(names, settings));
    for (size_t i = 0; i < v.args.size(); ++i) {
      std::string kind = LiveKind(v, v.args[i]);
      if (!kind.empty()) live.emplace_back(absl::StrCat(v.words.size() + i, " ", absl::StrJoin(v.words, " ")), kind);
    }
  }
  for (const Command& c : api.commands()) {
    AddOnce(&first, c.service_command);
    AddOnce(&second[c.service_command], c.rpc_command);
    flags.emplace_back(absl::StrCat("\"", c.service_command, " ", c.rpc_command, "\""),
                       Flags(AcceptedFlags(nullptr, c), settings));
  }
  // The words typed so far, without flags and their values: "--output=json" reaches bash as
  // "--output", "=", "json" (COMP_WORDBREAKS), and "-o json" is two words.
  std::string out =
      "# bash completion for ppnctl: source <(ppnctl completion bash)\n"
      "_ppnctl() {\n"
      "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} w skip=0 i words=()\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=${COMP_WORDS[i]}\n"
      "    if ((skip)); then skip=0; continue; fi\n"
      "    if [[ $w == = || $w == -o ]]; then skip=1; continue; fi\n"
      "    [[ $w == -* ]] && continue\n"
      "    words+=(\"$w\")\n"
      "  done\n"
      "  if [[ $cur == = ]]; then cur=\"\"; prev=${COMP_WORDS[COMP_CWORD-1]}\n"
      "  elif [[ $prev == = ]]; then prev=${COMP_WORDS[COMP_CWORD-2]}\n"
      "  elif [[ $prev != -o ]]; then prev=\"\"; fi\n"
      "  [[ $prev == -o ]] && prev=--output\n"
      "  if [[ -n $prev ]]; then\n"
      "    case $prev in\n"
      "      --output) COMPREPLY=($(compgen -W \"table wide json yaml\" -- \"$cur\")) ;;\n"
      "      *) COMPREPLY=() ;;\n"
      "    esac\n"
      "    return\n"
      "  fi\n"
      "  if [[ $cur == -* ]]; then\n"
      "    case \"${words[0]} ${words[1]}\" in\n";
  // Two-word patterns before the one-word ones ("migrate "*) that would also match them.
  std::stable_sort(flags.begin(), flags.end(),
                   [](const auto& a, const auto& b) { return (a.first.back() != '*') > (b.first.back() != '*'); });
  for (const auto& [pattern, words] : flags) absl::StrAppend(&out, "      ", pattern, ") ", Reply(words), " ;;\n");
  // A flag that wants a value ends in "=" and gets no space after it; a whole word gets one.
  absl::StrAppend(&out, "      *) ", Reply(settings), " ;;\n    esac\n",
                  "    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]]; then compopt -o nospace 2>/dev/null; "
                  "fi\n",
                  "    return\n  fi\n  case ${#words[@]} in\n", "  0) ", Reply(absl::StrJoin(first, " ")),
                  " ;;\n  1) case ${words[0]} in\n");
  for (const std::string& w : first) {
    auto it = second.find(w);
    if (it != second.end()) absl::StrAppend(&out, "       ", w, ") ", Reply(absl::StrJoin(it->second, " ")), " ;;\n");
  }
  out += "     esac ;;\n  esac\n";
  // Live names: asked of the mesh by the hidden __complete verb, which prints nothing when it
  // cannot reach it, so a dead mesh completes nothing rather than an error.
  if (!live.empty()) {
    out += "  case \"${#words[@]} ${words[*]}\" in\n";
    for (const auto& [pattern, kind] : live) {
      absl::StrAppend(&out, "    \"", pattern, "\"*) COMPREPLY=($(compgen -W \"$(ppnctl __complete ", kind,
                      " 2>/dev/null)\" -- \"$cur\")) ;;\n");
    }
    out += "  esac\n";
  }
  out += "}\ncomplete -F _ppnctl ppnctl\n";
  return out;
}

std::string ZshCompletion(const std::vector<Verb>& verbs, const Api& api) {
  return absl::StrCat(
      "#compdef ppnctl\n# zsh completion for ppnctl: source <(ppnctl completion zsh)\n"
      "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n",
      BashCompletion(verbs, api));
}

}  // namespace ppn::ppnctl
