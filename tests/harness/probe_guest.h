#pragma once

// The hostile probe guest of the network tests: the test guest told by its user-data to try
// targets every 2 s and print what answered (tools/test-guest/init, "#ppn-probe").

#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::testing {

// A 128 MiB test guest forwarding port 80 that probes `probes` ("tcp HOST PORT", "http HOST PORT").
ppn::types::v1::VmSpec ProbeSpec(const std::string& name, const std::vector<std::string>& probes);

// Each target's answer ("http HOST:PORT" → "open", "closed" or the first line of the body) in
// the first complete probe round numbered above `after` on `console`; sets `*round` to its
// number. Fails the test after `timeout`.
std::map<std::string, std::string> ProbeRound(const std::string& console, int after, int* round,
                                              absl::Duration timeout = absl::Seconds(90));

}  // namespace ppn::testing
