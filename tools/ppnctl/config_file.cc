#include "tools/ppnctl/config_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"

namespace ppn::ppnctl {

const ConfigFile::Keys* ConfigFile::Context(const std::string& name) const {
  for (const auto& [n, keys] : contexts) {
    if (n == name) return &keys;
  }
  return nullptr;
}

ConfigFile::Keys* ConfigFile::Context(const std::string& name) {
  for (auto& [n, keys] : contexts) {
    if (n == name) return &keys;
  }
  return nullptr;
}

std::string ConfigFile::current() const {
  auto it = top.find("current_context");
  return it == top.end() ? "" : it->second;
}

bool ValidContextName(const std::string& name) {
  if (name.empty() || name.size() > 63 || !absl::ascii_isalnum(name[0])) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

absl::Status SetContext(ConfigFile* config, const std::string& name, const ConfigFile::Keys& keys) {
  if (!ValidContextName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("context name \"", name, "\" must be letters, digits, '.', '_' or '-' (at most 63)"));
  }
  ConfigFile::Keys* context = config->Context(name);
  ConfigFile::Keys merged = context == nullptr ? ConfigFile::Keys{} : *context;
  for (const auto& [k, v] : keys) merged[k] = v;
  // One way to authenticate: a token names a tenant, a certificate the operator or a node.
  if (keys.count("token_file") != 0) {
    merged.erase("cert");
    merged.erase("key");
  } else if (keys.count("cert") != 0 || keys.count("key") != 0) {
    merged.erase("token_file");
  }
  if (keys.count("token_file") != 0 && (keys.count("cert") != 0 || keys.count("key") != 0)) {
    return absl::InvalidArgumentError(
        "a context takes --cert/--key (mesh services) or --token_file (tenant API), "
        "not both");
  }
  if (context == nullptr) {
    config->contexts.emplace_back(name, std::move(merged));
  } else {
    *context = std::move(merged);
  }
  return absl::OkStatus();
}

absl::Status UseContext(ConfigFile* config, const std::string& name) {
  if (config->Context(name) == nullptr) {
    std::string known;
    for (const auto& [n, keys] : config->contexts) absl::StrAppend(&known, known.empty() ? "" : ", ", n);
    return absl::NotFoundError(
        absl::StrCat("no context \"", name, "\"; ",
                     known.empty() ? "there are none (ppnctl config set-context)" : "known: " + known));
  }
  config->top["current_context"] = name;
  return absl::OkStatus();
}

std::string RenderContexts(const ConfigFile& config) {
  std::vector<std::vector<std::string>> rows = {{"CURRENT", "NAME", "ENDPOINT", "CA", "AUTH"}};
  auto get = [](const ConfigFile::Keys& keys, const std::string& key) {
    auto it = keys.find(key);
    return it == keys.end() || it->second.empty() ? std::string("-") : it->second;
  };
  for (const auto& [name, keys] : config.contexts) {
    std::string auth = keys.count("token_file") != 0 ? "token file " + get(keys, "token_file")
                       : keys.count("cert") != 0     ? "cert " + get(keys, "cert")
                                                     : "-";
    rows.push_back({name == config.current() ? "*" : "", name, get(keys, "endpoint"), get(keys, "ca"), auth});
  }
  std::vector<size_t> width(5, 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&out, row[i], i + 1 < row.size() ? std::string(width[i] - row[i].size() + 2, ' ') : "");
    }
    out += "\n";
  }
  return out;
}

absl::StatusOr<ConfigFile> ParseConfig(const std::string& text, const std::string& path) {
  ConfigFile config;
  ConfigFile::Keys* section = &config.top;
  std::string section_name;
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++number;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#') continue;
    std::string where = absl::StrCat(path, ":", number, ": ");
    if (line[0] == '[') {
      absl::string_view inner = line;
      if (!absl::ConsumePrefix(&inner, "[context ") || !absl::ConsumeSuffix(&inner, "]")) {
        return absl::InvalidArgumentError(absl::StrCat(where, "want [context NAME]"));
      }
      std::string name(absl::StripAsciiWhitespace(inner));
      if (!ValidContextName(name)) return absl::InvalidArgumentError(absl::StrCat(where, "bad context name"));
      if (config.Context(name) != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(where, "context \"", name, "\" appears twice"));
      }
      config.contexts.emplace_back(name, ConfigFile::Keys{});
      section = &config.contexts.back().second;
      section_name = name;
      continue;
    }
    std::vector<std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    if (kv.size() != 2) return absl::InvalidArgumentError(absl::StrCat(where, "want key=value"));
    std::string key(absl::StripAsciiWhitespace(kv[0]));
    for (char& c : key) c = c == '-' ? '_' : c;
    (*section)[key] = std::string(absl::StripAsciiWhitespace(kv[1]));
    config.lines[{section_name, key}] = number;
  }
  return config;
}

std::string SerializeConfig(const ConfigFile& config) {
  std::string out = "# ppnctl's settings and contexts (ppnctl config --help); ppnctl config rewrites this file\n";
  for (const auto& [k, v] : config.top) absl::StrAppend(&out, k, "=", v, "\n");
  for (const auto& [name, keys] : config.contexts) {
    absl::StrAppend(&out, "\n[context ", name, "]\n");
    for (const auto& [k, v] : keys) absl::StrAppend(&out, k, "=", v, "\n");
  }
  return out;
}

absl::Status SaveConfig(const ConfigFile& config, const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    bool made = std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot make ", dir.string(), ": ", ec.message()));
    if (made) chmod(dir.c_str(), 0700);
  }
  return WriteFileAtomically(path, SerializeConfig(config), 0600);
}

}  // namespace ppn::ppnctl
