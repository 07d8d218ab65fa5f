#pragma once

// ppnctl's help, made from the verb table, the settings table and the API's descriptors
// (their .proto comments): nothing is written twice. Pure.

#include <string>
#include <vector>

#include "tools/ppnctl/api.h"
#include "tools/ppnctl/verb.h"

namespace ppn::ppnctl {

// `ppnctl help`: the verbs, every RPC by service, the settings.
std::string MainHelp(const std::vector<Verb>& verbs, const Api& api);

// Help for what `resolved` names: a verb (usage, what it calls, the request's fields), an RPC
// (its fields) or a group (its verbs, or the service's RPCs).
std::string HelpFor(const Resolved& resolved, const std::vector<Verb>& verbs, const Api& api);

// `ppnctl SERVICE RPC --help`: the RPC's comment and its request's fields.
std::string RpcHelp(const Command& command, const Api& api);

}  // namespace ppn::ppnctl
