#include "tools/ppnctl/command_line.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tools/ppnctl/suggest.h"

namespace ppn::ppnctl {
namespace {

bool IsHelp(const std::string& a) { return a == "-h" || a == "--help" || absl::StartsWith(a, "--help="); }

bool IsNegativeNumber(const std::string& a) { return a.size() > 1 && a[0] == '-' && absl::ascii_isdigit(a[1]); }

// Whether the argument after a bare "--name" is its value. Anything that looks like a flag
// is not, so "--to -h" still asks for help and "--dry_run -o json" keeps its -o.
bool IsValue(const std::string& a) { return !absl::StartsWith(a, "-") || IsNegativeNumber(a); }

}  // namespace

absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const std::vector<std::string>& setting_names) {
  CommandLine cl;
  // Help is looked for first, in every position: whatever else is wrong with the line,
  // asking for help must never run anything.
  cl.help = std::any_of(args.begin(), args.end(), IsHelp);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (IsHelp(a)) continue;
    if (a == "-o") {
      if (i + 1 == args.size() || IsHelp(args[i + 1])) {
        return absl::InvalidArgumentError("-o needs a format: table, wide, json or yaml");
      }
      cl.settings["output"] = args[++i];
      continue;
    }
    if (absl::StartsWith(a, "-o") && !absl::StartsWith(a, "--")) {  // -ojson, as kubectl takes it
      cl.settings["output"] = a.substr(a[2] == '=' ? 3 : 2);
      continue;
    }
    if (a == "-v" || a == "--verbose") {  // a switch: never takes the next word as its value
      cl.settings["verbose"] = "true";
      continue;
    }
    if (a == "-f") {  // --follow, as tail and kubectl logs take it
      cl.flags.emplace_back("follow", "true");
      continue;
    }
    if (absl::StartsWith(a, "--")) {
      std::string name = a.substr(2), value = "true";
      size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (i + 1 < args.size() && IsValue(args[i + 1])) {
        value = args[++i];
      }
      if (name.empty()) return absl::InvalidArgumentError(absl::StrCat("\"", a, "\": a flag needs a name"));
      std::string underscored = name;  // --token-file is --token_file, as people type it
      for (char& c : underscored) c = c == '-' ? '_' : c;
      if (std::find(setting_names.begin(), setting_names.end(), underscored) != setting_names.end()) {
        cl.settings[underscored] = value;
      } else {
        cl.flags.emplace_back(name, value);
      }
      continue;
    }
    if (absl::StartsWith(a, "-") && !IsNegativeNumber(a)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag \"", a, "\"", DidYouMean(a, {"-h", "-o", "-v", "-f"}), "; long flags start with --"));
    }
    cl.words.push_back(a);
  }
  return cl;
}

}  // namespace ppn::ppnctl
