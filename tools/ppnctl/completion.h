#pragma once

// Shell completion for ppnctl, made from the verb table, the settings and the API's
// descriptors, so a new verb or RPC completes without a line of its own. Pure.

#include <string>
#include <vector>

#include "tools/ppnctl/api.h"
#include "tools/ppnctl/verb.h"

namespace ppn::ppnctl {

// A bash script defining the completion: `source <(ppnctl completion bash)`.
std::string BashCompletion(const std::vector<Verb>& verbs, const Api& api);

}  // namespace ppn::ppnctl
