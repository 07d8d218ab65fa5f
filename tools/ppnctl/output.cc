#include "tools/ppnctl/output.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "tools/ppnctl/suggest.h"

namespace ppn::ppnctl {
namespace {

std::string Json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;  // scripts see 0 and false, not a missing key
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

std::string Scalar(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object()) return v.empty() ? "{}" : v.dump();
  if (v.is_array()) {
    std::string s;
    for (const auto& e : v) absl::StrAppend(&s, s.empty() ? "" : ",", Scalar(e));
    return s;
  }
  return v.dump();
}

void Yaml(const nlohmann::json& v, int indent, std::string* out) {
  std::string pad(indent, ' ');
  if (v.is_object()) {
    for (const auto& [k, e] : v.items()) {
      if ((e.is_object() || e.is_array()) && !e.empty()) {
        absl::StrAppend(out, pad, k, ":\n");
        Yaml(e, indent + 2, out);
      } else {
        absl::StrAppend(out, pad, k, ": ", e.is_string() ? nlohmann::json(e).dump() : Scalar(e), "\n");
      }
    }
  } else if (v.is_array()) {
    for (const auto& e : v) {
      if (e.is_object()) {
        std::string inner;
        Yaml(e, indent + 2, &inner);
        absl::StrAppend(out, pad, "- ", inner.substr(indent + 2));
      } else {
        absl::StrAppend(out, pad, "- ", e.is_string() ? e.dump() : Scalar(e), "\n");
      }
    }
  }
}

// "VM_STATE_" for VmState: what all its values' names begin with, up to an underscore.
std::string EnumPrefix(const google::protobuf::EnumDescriptor* e) {
  if (e->value_count() < 2) return "";
  std::string prefix = e->value(0)->name();
  for (int i = 1; i < e->value_count(); ++i) {
    const std::string& n = e->value(i)->name();
    size_t j = 0;
    while (j < prefix.size() && j < n.size() && prefix[j] == n[j]) ++j;
    prefix.resize(j);
  }
  size_t underscore = prefix.rfind('_');
  return underscore == std::string::npos ? "" : prefix.substr(0, underscore + 1);
}

void Redact(nlohmann::json* v) {
  if (v->is_object()) {
    for (auto& [k, e] : v->items()) {
      if (IsSecretField(k) && !(e.is_string() && e.get<std::string>().empty())) {
        e = "<redacted>";
      } else {
        Redact(&e);
      }
    }
  } else if (v->is_array()) {
    for (auto& e : *v) Redact(&e);
  }
}

}  // namespace

bool IsSecretField(const std::string& name) {
  std::string n = absl::AsciiStrToLower(name);
  for (const char* word : {"token", "key", "secret", "password", "user_data", "userdata", "credential"}) {
    if (n.find(word) != std::string::npos) return true;
  }
  return false;
}

std::string RedactedJson(const google::protobuf::Message& message) {
  nlohmann::json doc = nlohmann::json::parse(Json(message), nullptr, false);
  Redact(&doc);
  return doc.dump();
}

absl::StatusOr<Format> ParseFormat(const std::string& name) {
  if (name == "table" || name.empty()) return Format::kTable;
  if (name == "wide") return Format::kWide;
  if (name == "json") return Format::kJson;
  if (name == "yaml") return Format::kYaml;
  return absl::InvalidArgumentError(
      absl::StrCat("-o must be table, wide, json or yaml", DidYouMean(name, {"table", "wide", "json", "yaml"})));
}

std::string Render(const google::protobuf::Message& message, Format format) {
  nlohmann::json doc = nlohmann::json::parse(Json(message), nullptr, false);
  if (format == Format::kJson) return doc.dump() + "\n";
  std::string out;
  if ((format == Format::kTable || format == Format::kWide) && doc.is_object() && doc.size() <= 2) {
    // A list response (one repeated message field, maybe a page token): a table.
    for (const auto& [key, value] : doc.items()) {
      if (!value.is_array() || value.empty() || !value[0].is_object()) continue;
      std::vector<std::string> cols;
      for (const auto& row : value) {
        for (const auto& [k, v] : row.items()) {
          if (std::find(cols.begin(), cols.end(), k) == cols.end() && !(v.is_object() && v.size() > 2))
            cols.push_back(k);
        }
      }
      // Tables drop an enum's prefix (RUNNING, not VM_STATE_RUNNING); JSON and YAML keep it.
      std::vector<std::string> enum_prefix(cols.size());
      const google::protobuf::FieldDescriptor* list = message.GetDescriptor()->FindFieldByName(key);
      const google::protobuf::Descriptor* row_type = list == nullptr ? nullptr : list->message_type();
      for (size_t i = 0; row_type != nullptr && i < cols.size(); ++i) {
        const google::protobuf::FieldDescriptor* f = row_type->FindFieldByName(cols[i]);
        if (f != nullptr && f->enum_type() != nullptr) enum_prefix[i] = EnumPrefix(f->enum_type());
      }
      std::vector<std::vector<std::string>> cells;
      std::vector<size_t> width;
      for (const auto& c : cols) width.push_back(c.size());
      for (const auto& row : value) {
        std::vector<std::string> line;
        for (size_t i = 0; i < cols.size(); ++i) {
          std::string cell = row.contains(cols[i]) ? Scalar(row[cols[i]]) : "";
          if (!enum_prefix[i].empty() && absl::StartsWith(cell, enum_prefix[i]))
            cell = cell.substr(enum_prefix[i].size());
          if (cell.size() > 48) cell = cell.substr(0, 45) + "...";
          width[i] = std::max(width[i], cell.size());
          line.push_back(cell);
        }
        cells.push_back(line);
      }
      auto emit = [&](const std::vector<std::string>& line) {
        for (size_t i = 0; i < line.size(); ++i) {
          absl::StrAppend(&out, line[i], i + 1 < line.size() ? std::string(width[i] - line[i].size() + 2, ' ') : "");
        }
        out += "\n";
      };
      std::vector<std::string> header;
      for (const auto& c : cols) header.push_back(absl::AsciiStrToUpper(c));
      emit(header);
      for (const auto& line : cells) emit(line);
      for (const auto& [k, v] : doc.items()) {
        if (k == key || (v.is_string() && v.get<std::string>().empty())) continue;  // no empty page token
        absl::StrAppend(&out, k == "next_page_token" ? "more: --page_token" : k, k == "next_page_token" ? "=" : ": ",
                        Scalar(v), "\n");
      }
      return out;
    }
  }
  Yaml(doc, 0, &out);
  return out.empty() ? "{}\n" : out;
}

std::string ConsoleText(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (unsigned char c : bytes) {
    if ((c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  return out;
}

}  // namespace ppn::ppnctl
