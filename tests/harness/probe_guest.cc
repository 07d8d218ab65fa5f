#include "tests/harness/probe_guest.h"

#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "tests/harness/subprocess.h"

namespace ppn::testing {

ppn::types::v1::VmSpec ProbeSpec(const std::string& name, const std::vector<std::string>& probes) {
  ppn::types::v1::VmSpec spec;
  spec.set_display_name(name);
  spec.set_vcpus(1);
  spec.set_memory_mib(128);
  spec.set_image("ppn-test-guest");
  spec.add_port_forwards()->set_guest_port(80);
  std::string user_data = "#cloud-config\n";
  for (const std::string& p : probes) absl::StrAppend(&user_data, "#ppn-probe ", p, "\n");
  spec.set_user_data(user_data);
  return spec;
}

std::map<std::string, std::string> ProbeRound(const std::string& console, int after, int* round,
                                              absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  const std::regex done("PPN-PROBE-ROUND-DONE ([0-9]+)");
  while (absl::Now() < deadline) {
    std::string text = ReadAll(console);
    int last = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), done); it != std::sregex_iterator(); ++it) {
      int n = 0;
      if (absl::SimpleAtoi((*it)[1].str(), &n)) last = n;
    }
    if (last > after) {
      std::map<std::string, std::string> out;
      std::string prefix = absl::StrCat("PPN-PROBE round=", last, " ");
      for (absl::string_view line : absl::StrSplit(text, '\n')) {
        if (!absl::StartsWith(line, prefix)) continue;
        std::vector<std::string> f = absl::StrSplit(line.substr(prefix.size()), absl::MaxSplits(' ', 2));
        if (f.size() == 3) out[f[0] + " " + f[1]] = std::string(absl::StripAsciiWhitespace(f[2]));
      }
      *round = last;
      return out;
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
  FAIL("no probe round after " << after << " in " << console);
  return {};
}

}  // namespace ppn::testing
