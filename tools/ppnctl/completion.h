#pragma once

// Shell completion for ppnctl, made from the verb table, the settings and the API's
// descriptors, so a new verb or RPC completes without a line of its own. Pure.

#include <string>
#include <vector>

#include "tools/ppnctl/api.h"
#include "tools/ppnctl/verb.h"

namespace ppn::ppnctl {

// A bash script defining the completion: `source <(ppnctl completion bash)`. It completes
// verbs, services and RPCs, each one's flags (a flag wanting a value ends in "=" and gets no
// trailing space; whole words get one), -o's formats, and live VM and node names for the
// verbs that take them (asked of the mesh through `ppnctl __complete vms|nodes`).
std::string BashCompletion(const std::vector<Verb>& verbs, const Api& api);
// The same for zsh, through its bashcompinit: `source <(ppnctl completion zsh)`.
std::string ZshCompletion(const std::vector<Verb>& verbs, const Api& api);
// Whether help and completion leave `verb` out: its first word starts with "__".
bool IsHidden(const Verb& verb);

}  // namespace ppn::ppnctl
