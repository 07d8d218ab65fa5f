#pragma once

// A daily verb ("vm create NAME") and how words on the command line find one: each verb is
// one entry of a table (verb_table.h) that says its words, its arguments, its help line and
// what it calls; help, completion and the dispatch all read that one entry. Words that name
// no verb fall through to the generated layer, "SERVICE RPC", which has a command for every
// RPC in proto/. Pure (descriptors only).

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "tools/ppnctl/api.h"
#include "tools/ppnctl/settings.h"

namespace ppn::ppnctl {

struct Verb;

// Prints a response its own way; false to leave it to the default rendering.
using ResponsePrinter = bool (*)(const google::protobuf::Message&, const Settings&);

// One run of a verb or an RPC, as the command line asked for it.
struct Invocation {
  const Verb* verb = nullptr;                              // null for the generated "SERVICE RPC"
  const Command* command = nullptr;                        // the RPC to call; null for a local verb
  std::vector<std::string> args;                           // positional arguments, after the verb's words
  std::vector<std::pair<std::string, std::string>> flags;  // request flags, in order
  const Settings* settings = nullptr;
  // How the response prints when the verb says nothing (the generated layer): the table for
  // its type ("fleet list-vms" as `vm list` would), or null for the default rendering.
  ResponsePrinter type_print = nullptr;
};

// A local verb's action; returns the exit code.
using VerbAction = int (*)(const Invocation&);
// What runs after a verb's RPC succeeded when one of its local flags was given (`vm create
// --wait` watches the VM until it runs); gets the last response, returns the exit code.
using FollowUp = int (*)(const Invocation&, const google::protobuf::Message& response);
// Turns an alias's value into its field's, as SetField takes it (JSON for a message);
// INVALID_ARGUMENT saying what was wrong.
using ValueConverter = absl::StatusOr<std::string> (*)(const std::string& value);

// One verb. The table builds each with the chained setters below, which read as the entry:
//   Verb({"migrate"}).Args({"VM"}).Help("...").Calls("scheduler", "migrate").ArgFields({"vm_id"})
struct Verb {
  explicit Verb(std::vector<std::string> verb_words) : words(std::move(verb_words)) {}

  std::vector<std::string> words;  // {"vm", "create"}
  // Positional arguments by name, in order: {"NAME"}. A last one ending in "..." takes any
  // number (none included).
  std::vector<std::string> args;
  std::string flags;    // usage of its usual flags: "[--to NODE]"
  std::string help;     // one line, for `ppnctl help`
  std::string details;  // more, for `ppnctl VERB --help` (optional)
  // What it calls: an RPC of the generated layer ...
  std::string service;                  // "tenant"
  std::string rpc;                      // "create-vm"
  std::vector<std::string> arg_fields;  // the request field each positional argument sets
  // Request fields set unless a flag names the same field.
  std::vector<std::pair<std::string, std::string>> defaults;
  // Short flags of this verb and the request field each sets: {"to", "target_node_id"}.
  std::vector<std::pair<std::string, std::string>> aliases;
  // The aliases whose values are written otherwise than their fields' ("--allow=CIDR:PORT" for
  // an EgressRule), and what converts them.
  std::vector<std::pair<std::string, ValueConverter>> converters;
  ResponsePrinter print = nullptr;
  // Flags of the verb itself, not of the request ("wait"), and what they run afterwards.
  std::vector<std::string> local_flags;
  FollowUp follow_up = nullptr;
  // ... or a local action (then service and rpc are empty).
  VerbAction run = nullptr;
  // The operator's form of this verb: a command line giving `--<form_flag>` runs `form`
  // instead (`vm destroy --tenant acme web` calls the fleet for any tenant's VM, not the
  // tenant API). The form's `required_flags` must be given with it (--force).
  std::string form_flag;
  const Verb* form = nullptr;
  std::vector<std::string> required_flags;

  Verb& Args(std::vector<std::string> v) { return args = std::move(v), *this; }
  Verb& Flags(std::string v) { return flags = std::move(v), *this; }
  Verb& Help(std::string v) { return help = std::move(v), *this; }
  Verb& Details(std::string v) { return details = std::move(v), *this; }
  Verb& Calls(std::string service_name, std::string rpc_name) {
    service = std::move(service_name);
    rpc = std::move(rpc_name);
    return *this;
  }
  Verb& ArgFields(std::vector<std::string> v) { return arg_fields = std::move(v), *this; }
  Verb& Defaults(std::vector<std::pair<std::string, std::string>> v) { return defaults = std::move(v), *this; }
  Verb& Alias(std::string flag, std::string field, ValueConverter convert = nullptr) {
    if (convert != nullptr) converters.emplace_back(flag, convert);
    aliases.emplace_back(std::move(flag), std::move(field));
    return *this;
  }
  Verb& Prints(ResponsePrinter v) { return print = v, *this; }
  Verb& Then(std::vector<std::string> flags_, FollowUp v) {
    local_flags = std::move(flags_);
    return follow_up = v, *this;
  }
  Verb& Runs(VerbAction v) { return run = v, *this; }
  Verb& OperatorForm(std::string flag, const Verb* v) {
    form_flag = std::move(flag);
    return form = v, *this;
  }
  Verb& Requires(std::vector<std::string> v) { return required_flags = std::move(v), *this; }
};

// The verb a command line with `flags` runs: `verb` itself, or its operator form when a flag
// names the form's flag. INVALID_ARGUMENT naming a required flag of the form that is missing.
absl::StatusOr<const Verb*> FormFor(const Verb* verb, const std::vector<std::pair<std::string, std::string>>& flags);

// "vm create NAME [--spec.memory_mib=N]".
std::string Usage(const Verb& verb);

// The flags a run of `command` (for `verb`, or null) accepts besides the settings: the
// request's field paths, the verb's aliases and --json.
std::vector<std::string> AcceptedFlags(const Verb* verb, const Command& command);

// What a command line's words name.
struct Resolved {
  const Verb* verb = nullptr;        // a daily verb ...
  const Command* command = nullptr;  // ... and the RPC it calls, or a generated RPC
  // The words named only a group of verbs or a service ("vm", "ledger", "fleet"): help lists
  // what it holds; running it is an error.
  std::string group;
  std::vector<std::string> args;  // the words after the verb's (or after SERVICE RPC)
};

// Finds what `words` name: the verb of `verbs` whose words they begin with (the longest),
// else SERVICE RPC, else a group. NOT_FOUND naming the unknown word, what it could be and
// the nearest known one. Does not count arguments: `vm create --help` must find its verb.
absl::StatusOr<Resolved> Resolve(const std::vector<Verb>& verbs, const Api& api, const std::vector<std::string>& words);

// INVALID_ARGUMENT when `resolved` is a group, misses an argument or has one too many; the
// message carries the usage.
absl::Status CheckArguments(const Resolved& resolved);

}  // namespace ppn::ppnctl
