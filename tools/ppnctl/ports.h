#pragma once

// ppnctl's default endpoint of each service: 127.0.0.1 and the port of tools/ports, the
// mesh's one port table (they fit `tools/ppn up` run on this machine).

#include <map>
#include <string>

namespace ppn::ppnctl {

// Endpoint key ("tenant", "fleet", ...) → "127.0.0.1:<port>".
const std::map<std::string, std::string>& DefaultEndpoints();

}  // namespace ppn::ppnctl
