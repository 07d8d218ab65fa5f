#pragma once

// ppnctl's settings. Each is a flag (--ca), an environment variable (PPN_CA), a key of the
// config file's current context, a key of the file outside any context (ca=), taken in that
// order, then its default. The config file is --config, else $PPNCTL_CONFIG, else
// $XDG_CONFIG_HOME/ppnctl/config, else ~/.config/ppnctl/config (config_file.h); the context is
// --context, else $PPN_CONTEXT, else the file's current_context.
// Endpoints: --endpoint (every service), else PPN_<SERVICE>_ENDPOINT, else the context's
// <service>_endpoint= or endpoint=, else <service>_endpoint= in the file, else 127.0.0.1 and
// the service's port in tools/ports.
// Pure apart from reading the config file; the environment is injected.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ppn::ppnctl {

struct SettingSpec {
  std::string name;        // flag and config key; the variable is PPN_<NAME>
  std::string value;       // what the value is, for help: "PEM", "HOST:PORT"
  std::string help;        // one line
  std::string fallback;    // the default; a leading "~/" is $HOME
  bool flag_only = false;  // not read from the environment or the file
};

// Every setting, in the order help lists them.
const std::vector<SettingSpec>& SettingSpecs();
// Their names: the flags ParseCommandLine treats as settings.
std::vector<std::string> SettingNames();

// Settings is the resolved view of all of them for one run; immutable once loaded, so safe
// to read from any thread. It owns copies of the flags and the file's lines.
class Settings {
 public:
  // Looks up an environment variable; std::nullopt when unset.
  using Env = std::function<std::optional<std::string>(const std::string&)>;
  // The process's environment.
  static Env ProcessEnv();

  // `flags`: settings given on the command line. `services`: the names a
  // <service>_endpoint key may use. Reads the config file: a missing default file is no
  // error, a missing named one is NOT_FOUND; INVALID_ARGUMENT naming FILE:LINE for a line that
  // is not key=value or names no setting.
  static absl::StatusOr<Settings> Load(std::map<std::string, std::string> flags, Env env,
                                       const std::vector<std::string>& services);

  // The setting `name` (one of SettingSpecs()): flag, PPN_<NAME>, config file, default.
  std::string Get(const std::string& name) const;
  // True if `name` was given by a flag, the environment or the file (not defaulted).
  bool IsSet(const std::string& name) const;
  // The endpoint of `service` ("fleet", "pairing-admin"); "" if it has none.
  std::string Endpoint(const std::string& service) const;
  // An environment variable (PPN_TOKEN is read only from there, never from a flag).
  std::optional<std::string> Environment(const std::string& name) const { return env_(name); }
  // The setting given by a flag only, or std::nullopt.
  std::optional<std::string> Flag(const std::string& name) const;
  // The context in use ("" for none) and NOT_FOUND when it names none of the file's.
  const std::string& context() const { return context_; }
  const absl::Status& context_status() const { return context_status_; }
  // The config file that was read, or would have been; "" without HOME.
  const std::string& config_path() const { return config_path_; }

 private:
  Settings(std::map<std::string, std::string> flags, Settings::Env env)
      : flags_(std::move(flags)), env_(std::move(env)) {}
  std::optional<std::string> Lookup(const std::string& name) const;
  std::string ExpandHome(const std::string& path) const;

  std::map<std::string, std::string> flags_;
  std::map<std::string, std::string> file_;          // keys with '-' written as '_'
  std::map<std::string, std::string> context_keys_;  // the context in use
  std::string context_;
  absl::Status context_status_;
  Settings::Env env_;
  std::string config_path_;
};

}  // namespace ppn::ppnctl
