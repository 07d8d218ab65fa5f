#pragma once

// ppnctl's config file, ~/.config/ppnctl/config (or $XDG_CONFIG_HOME/ppnctl/config, or
// --config): `key=value` settings, then contexts like kubectl's, each a section of the same
// keys, and which one is current:
//
//   current_context=state
//   [context state]
//   ca=/home/me/ppn/state/pki/ca.pem
//   cert=/home/me/ppn/state/pki/operator.pem
//
// Parsing and writing only; which keys are valid and what they mean is settings.h's. Writing
// is atomic (a temporary file renamed over it) and mode 0600: a context may name a token file.

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace ppn::ppnctl {

struct ConfigFile {
  using Keys = std::map<std::string, std::string>;
  Keys top;                                            // the settings outside any context; current_context among them
  std::vector<std::pair<std::string, Keys>> contexts;  // in the file's order
  // Where each key was read, by {context ("" outside any), key}: for error messages.
  std::map<std::pair<std::string, std::string>, int> lines;

  // The context `name`, or null.
  const Keys* Context(const std::string& name) const;
  Keys* Context(const std::string& name);
  std::string current() const;
};

// A context's name: [A-Za-z0-9][A-Za-z0-9._-]{0,62}.
bool ValidContextName(const std::string& name);

// Creates context `name` or updates it with `keys` (the ones given replace the old; the rest
// stay); INVALID_ARGUMENT for a bad name, or for a certificate and a token file together.
absl::Status SetContext(ConfigFile* config, const std::string& name, const ConfigFile::Keys& keys);
// NOT_FOUND when `name` is none of its contexts.
absl::Status UseContext(ConfigFile* config, const std::string& name);
// The `get-contexts` table: CURRENT ("*"), NAME, ENDPOINT, CA, AUTH (the certificate, or the
// token's file: never a token).
std::string RenderContexts(const ConfigFile& config);

// INVALID_ARGUMENT naming `path`:LINE for a line that is not `key=value`, `[context NAME]`, a
// comment or blank, or for a context named twice. Keys are not checked here.
absl::StatusOr<ConfigFile> ParseConfig(const std::string& text, const std::string& path);
std::string SerializeConfig(const ConfigFile& config);
// Writes `config` to `path` atomically with mode 0600, making its directory (0700) if need be.
absl::Status SaveConfig(const ConfigFile& config, const std::string& path);

}  // namespace ppn::ppnctl
