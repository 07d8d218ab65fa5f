// ppnctl: the operator CLI. Every RPC of every service in proto/ is a command, derived at run
// time from the API's descriptors (compiled in); the daily verbs of verb_table.h sit on top.
// This file only wires the parts: command line → verb → settings → run. Run `ppnctl help`.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tools/ppnctl/api.h"
#include "tools/ppnctl/caller.h"
#include "tools/ppnctl/command_line.h"
#include "tools/ppnctl/help.h"
#include "tools/ppnctl/ports.h"
#include "tools/ppnctl/rpc_runner.h"
#include "tools/ppnctl/settings.h"
#include "tools/ppnctl/suggest.h"
#include "tools/ppnctl/verb.h"
#include "tools/ppnctl/verb_table.h"

namespace ppn::ppnctl {
namespace {

// The services a <service>_endpoint setting may name.
std::vector<std::string> EndpointServices(const Api& api) {
  std::vector<std::string> services = api.Services();
  for (const auto& [service, endpoint] : DefaultEndpoints()) services.push_back(service);
  return services;
}

std::vector<std::string> verb_words(const Resolved& r) {
  return r.verb == nullptr ? std::vector<std::string>{} : r.verb->words;
}

int Main(int argc, char** argv) {
  CancelCallsOnInterrupt();
  absl::StatusOr<CommandLine> line = ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc), SettingNames());
  if (!line.ok()) return UsageError(line.status());
  const Api& api = Api::Get();
  if (line->words.empty()) {
    std::fputs(MainHelp(Verbs(), api).c_str(), stdout);
    return line->help ? 0 : kExitUsage;
  }
  absl::StatusOr<Resolved> resolved = Resolve(Verbs(), api, line->words);
  if (!resolved.ok()) return UsageError(resolved.status());
  // Help is answered before anything else is looked at: asking for it never runs anything.
  if (line->help) {
    std::fputs(HelpFor(*resolved, Verbs(), api).c_str(), stdout);
    return 0;
  }
  absl::Status arguments = CheckArguments(*resolved);
  if (!arguments.ok()) return UsageError(arguments);
  absl::StatusOr<Settings> settings = Settings::Load(line->settings, Settings::ProcessEnv(), EndpointServices(api));
  if (!settings.ok()) return UsageError(settings.status());
  // A context that is not there is an error for every verb but `config`'s, which can fix it.
  if (!settings->context_status().ok() && (verb_words(*resolved).empty() || verb_words(*resolved)[0] != "config")) {
    return UsageError(settings->context_status());
  }
  // The operator's form of a verb (vm destroy --tenant ...) calls another RPC.
  absl::StatusOr<const Verb*> form = FormFor(resolved->verb, line->flags);
  if (!form.ok()) return UsageError(form.status());
  if (*form != resolved->verb) {
    absl::StatusOr<const Command*> command = api.Find((*form)->service, (*form)->rpc);
    if (!command.ok()) return UsageError(command.status());
    resolved->verb = *form;
    resolved->command = *command;
  }
  Invocation invocation{resolved->verb, resolved->command, resolved->args, line->flags, &*settings};
  if (resolved->command != nullptr) {
    invocation.type_print = PrinterForType(resolved->command->method->output_type()->full_name());
  }
  const Verb* verb = resolved->verb;
  if (verb != nullptr && verb->run != nullptr) {
    if (!line->flags.empty()) {
      return UsageError(absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", line->flags[0].first, DidYouMean(line->flags[0].first, SettingNames(), "--"),
                       " for ppnctl ", Usage(*verb), "; it takes only the settings (ppnctl help)")));
    }
    return verb->run(invocation);
  }
  return RunRpc(invocation);
}

}  // namespace
}  // namespace ppn::ppnctl

int main(int argc, char** argv) { return ppn::ppnctl::Main(argc, argv); }
