#pragma once

// Splits ppnctl's arguments into words (the verb and its positional arguments), settings
// flags (--ca, -o, ...), request flags (--spec.memory_mib=128) and the request for help.
// Pure; it knows no verb: which words and request flags are valid is decided later, from the
// verb table and the request's descriptor.
//
//   --name=value, --name value    a flag (value "true" when none follows: the next argument
//                                 starts with "-" and is not a negative number)
//   -o FORMAT, -oFORMAT, -o=FORMAT  --output=FORMAT
//   -v, --verbose                 the request/response trace (a switch: takes no value)
//   -h, --help                    help, wherever it stands: it is never taken as a value

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace ppn::ppnctl {

struct CommandLine {
  // The words in order: "vm", "create", "web".
  std::vector<std::string> words;
  // Settings given as flags, by name (the last one given wins).
  std::map<std::string, std::string> settings;
  // Every other flag, in order (a repeated flag fills a repeated field).
  std::vector<std::pair<std::string, std::string>> flags;
  // -h or --help was given somewhere: print help, run nothing.
  bool help = false;
};

// Parses `args` (argv without the program name); `setting_names` are the flags that are
// settings. INVALID_ARGUMENT for an unknown short flag, a flag without a name, or -o without
// a value.
absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const std::vector<std::string>& setting_names);

}  // namespace ppn::ppnctl
