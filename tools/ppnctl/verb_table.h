#pragma once

// The table of ppnctl's daily verbs: one entry per verb says its words, its arguments, its
// help line and what it calls. Help, completion and the dispatch in main.cc all read it, so
// a new verb is one entry here (and, for a local action, the function it runs).

#include <vector>

#include "tools/ppnctl/verb.h"

namespace ppn::ppnctl {

// The daily verbs, in the order help lists them.
const std::vector<Verb>& Verbs();

// The table a response of type `full_name` prints as in the generated layer ("fleet
// list-vms", "tenant list-vms", "fleet list-nodes"), or null.
ResponsePrinter PrinterForType(const std::string& full_name);

}  // namespace ppn::ppnctl
