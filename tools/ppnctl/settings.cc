#include "tools/ppnctl/settings.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "tools/ppnctl/config_file.h"
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
      {"context", "NAME", "the context of the config file to use (or $PPN_CONTEXT; default: its current one)", "",
       true},
      {"config", "FILE", "the config file (or $PPNCTL_CONFIG; default $XDG_CONFIG_HOME/ppnctl/config)",
       "~/.config/ppnctl/config", true},
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
    std::optional<std::string> xdg = s.env_("XDG_CONFIG_HOME");
    s.config_path_ = xdg.has_value() && absl::StartsWith(*xdg, "/") ? *xdg + "/ppnctl/config"
                                                                    : s.ExpandHome(Spec("config")->fallback);
  }
  // The context: --context, else $PPN_CONTEXT, else the file's current_context.
  if (auto c = s.flags_.find("context"); c != s.flags_.end()) {
    s.context_ = c->second;
  } else if (std::optional<std::string> v = s.env_("PPN_CONTEXT"); v.has_value() && !v->empty()) {
    s.context_ = *v;
  }
  if (s.config_path_.empty()) return s;
  absl::StatusOr<std::string> text = ReadFile(s.config_path_);
  ConfigFile config;
  if (text.ok()) {
    absl::StatusOr<ConfigFile> parsed = ParseConfig(*text, s.config_path_);
    if (!parsed.ok()) return parsed.status();
    config = *std::move(parsed);
  } else if (named || text.status().code() != absl::StatusCode::kNotFound) {
    return absl::Status(text.status().code(), absl::StrCat("config file: ", text.status().message()));
  }
  std::vector<std::string> keys;
  for (const SettingSpec& spec : SettingSpecs()) {
    if (!spec.flag_only) keys.push_back(spec.name);
  }
  for (const std::string& service : services) keys.push_back(Underscores(service) + "_endpoint");
  // A misspelt key would silently leave its setting at the default: refuse it.
  auto check = [&](const ConfigFile::Keys& section, const std::vector<std::string>& allowed,
                   const std::string& context) -> absl::Status {
    for (const auto& [key, value] : section) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return absl::InvalidArgumentError(absl::StrCat(s.config_path_, ":", config.lines[{context, key}],
                                                       ": unknown setting \"", key, "\"", DidYouMean(key, allowed)));
      }
    }
    return absl::OkStatus();
  };
  std::vector<std::string> top_keys = keys;
  top_keys.push_back("current_context");
  PPN_RETURN_IF_ERROR(check(config.top, top_keys, ""));
  std::vector<std::string> context_keys = keys;
  context_keys.push_back("endpoint");  // every service, as --endpoint
  for (const auto& [name, section] : config.contexts) {
    PPN_RETURN_IF_ERROR(check(section, context_keys, name));
  }
  s.file_ = config.top;
  s.file_.erase("current_context");
  if (s.context_.empty()) s.context_ = config.current();
  if (!s.context_.empty()) {
    const ConfigFile::Keys* chosen = config.Context(s.context_);
    if (chosen == nullptr) {
      s.context_status_ = absl::NotFoundError(absl::StrCat("no context \"", s.context_, "\" in ", s.config_path_,
                                                           "; ppnctl config get-contexts lists them"));
    } else {
      s.context_keys_ = *chosen;
    }
  }
  return s;
}

std::optional<std::string> Settings::Flag(const std::string& name) const {
  auto f = flags_.find(name);
  if (f == flags_.end()) return std::nullopt;
  return f->second;
}

std::optional<std::string> Settings::Lookup(const std::string& name) const {
  if (auto f = flags_.find(name); f != flags_.end()) return f->second;
  const SettingSpec* spec = Spec(name);
  if (spec != nullptr && spec->flag_only) return std::nullopt;
  if (std::optional<std::string> v = env_(EnvName(name)); v.has_value() && !v->empty()) return v;
  if (auto f = context_keys_.find(Underscores(name)); f != context_keys_.end()) return f->second;
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
  std::string key = Underscores(service) + "_endpoint";
  if (std::optional<std::string> v = env_(EnvName(key)); v.has_value() && !v->empty()) return *v;
  if (auto f = context_keys_.find(key); f != context_keys_.end()) return f->second;
  if (auto f = context_keys_.find("endpoint"); f != context_keys_.end()) return f->second;
  if (auto f = file_.find(key); f != file_.end()) return f->second;
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
