#include "tools/ppnctl/settings.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "tools/ppnctl/ports.h"
#include "tools/ppnctl/suggest.h"

namespace ppn::ppnctl {
namespace {

std::string Underscores(const std::string& s) { return absl::StrReplaceAll(s, {{"-", "_"}}); }

std::string EnvName(const std::string& name) { return "PPN_" + absl::AsciiStrToUpper(Underscores(name)); }

const SettingSpec* Spec(const std::string& name) {
  for (const SettingSpec& s : SettingSpecs()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

}  // namespace

const std::vector<SettingSpec>& SettingSpecs() {
  static const auto* specs = new std::vector<SettingSpec>{
      {"endpoint", "HOST:PORT", "the service's address (default: 127.0.0.1 and its port in tools/ports)", "", true},
      {"ca", "PEM", "the mesh CA certificate", "state/pki/ca.pem"},
      {"cert", "PEM", "your operator certificate", "state/pki/operator.pem"},
      {"key", "PEM", "its private key", "state/pki/operator.key"},
      {"token_file", "FILE", "the tenant API's bearer token (or PPN_TOKEN)", ""},
      {"output", "FORMAT", "table, wide, json or yaml (also -o)", "table"},
      {"timeout", "DURATION", "deadline of each call, e.g. 30s (default 120s; streams: none)", ""},
      {"ledger_key", "KEY", "the verifier key `ledger verify` trusts (default: the one it pinned)", ""},
      {"known_ledgers", "FILE", "the ledger keys and checkpoints `ledger verify` remembers",
       "~/.config/ppnctl/known_ledgers"},
      {"verbose", "", "print each request and response on stderr, secrets redacted (also -v)", "", true},
      {"config", "FILE", "the config file (or $PPNCTL_CONFIG)", "~/.config/ppnctl/config", true},
  };
  return *specs;
}

std::vector<std::string> SettingNames() {
  std::vector<std::string> names;
  for (const SettingSpec& s : SettingSpecs()) names.push_back(s.name);
  return names;
}

Settings::Env Settings::ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<Settings> Settings::Load(std::map<std::string, std::string> flags, Env env,
                                        const std::vector<std::string>& services) {
  Settings s(std::move(flags), std::move(env));
  bool named = true;
  auto flag = s.flags_.find("config");
  if (flag != s.flags_.end()) {
    s.config_path_ = s.ExpandHome(flag->second);
  } else if (std::optional<std::string> v = s.env_("PPNCTL_CONFIG"); v.has_value() && !v->empty()) {
    s.config_path_ = s.ExpandHome(*v);
  } else {
    named = false;
    s.config_path_ = s.ExpandHome(Spec("config")->fallback);
  }
  if (s.config_path_.empty()) return s;
  absl::StatusOr<std::string> text = ReadFile(s.config_path_);
  if (!text.ok()) {
    if (!named && text.status().code() == absl::StatusCode::kNotFound) return s;
    return absl::Status(text.status().code(), absl::StrCat("config file: ", text.status().message()));
  }
  std::vector<std::string> keys;
  for (const SettingSpec& spec : SettingSpecs()) {
    if (!spec.flag_only) keys.push_back(spec.name);
  }
  for (const std::string& service : services) keys.push_back(Underscores(service) + "_endpoint");
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(*text, '\n')) {
    ++number;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    std::string where = absl::StrCat(s.config_path_, ":", number, ": ");
    if (kv.size() != 2) return absl::InvalidArgumentError(absl::StrCat(where, "want key=value"));
    std::string key = Underscores(std::string(absl::StripAsciiWhitespace(kv[0])));
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      // A misspelt key would silently leave its setting at the default: refuse it.
      return absl::InvalidArgumentError(absl::StrCat(where, "unknown setting \"", key, "\"", DidYouMean(key, keys)));
    }
    s.file_[key] = std::string(absl::StripAsciiWhitespace(kv[1]));
  }
  return s;
}

std::optional<std::string> Settings::Lookup(const std::string& name) const {
  if (auto f = flags_.find(name); f != flags_.end()) return f->second;
  const SettingSpec* spec = Spec(name);
  if (spec != nullptr && spec->flag_only) return std::nullopt;
  if (std::optional<std::string> v = env_(EnvName(name)); v.has_value() && !v->empty()) return v;
  if (auto f = file_.find(Underscores(name)); f != file_.end()) return f->second;
  return std::nullopt;
}

std::string Settings::Get(const std::string& name) const {
  std::optional<std::string> v = Lookup(name);
  if (v.has_value()) return *v;
  const SettingSpec* spec = Spec(name);
  return spec == nullptr ? "" : ExpandHome(spec->fallback);
}

bool Settings::IsSet(const std::string& name) const { return Lookup(name).has_value(); }

std::string Settings::Endpoint(const std::string& service) const {
  if (auto f = flags_.find("endpoint"); f != flags_.end()) return f->second;
  if (std::optional<std::string> v = Lookup(service + "_endpoint"); v.has_value()) return *v;
  auto d = DefaultEndpoints().find(service);
  return d == DefaultEndpoints().end() ? "" : d->second;
}

std::string Settings::ExpandHome(const std::string& path) const {
  if (!absl::StartsWith(path, "~/")) return path;
  std::optional<std::string> home = env_("HOME");
  if (!home.has_value() || home->empty()) return "";
  return *home + path.substr(1);
}

}  // namespace ppn::ppnctl
