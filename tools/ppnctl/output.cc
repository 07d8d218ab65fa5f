#include "tools/ppnctl/output.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

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

}  // namespace

absl::StatusOr<Format> ParseFormat(const std::string& name) {
  if (name == "table" || name.empty()) return Format::kTable;
  if (name == "wide") return Format::kWide;
  if (name == "json") return Format::kJson;
  if (name == "yaml") return Format::kYaml;
  return absl::InvalidArgumentError("-o must be table, wide, json or yaml");
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
      std::vector<std::vector<std::string>> cells;
      std::vector<size_t> width;
      for (const auto& c : cols) width.push_back(c.size());
      for (const auto& row : value) {
        std::vector<std::string> line;
        for (size_t i = 0; i < cols.size(); ++i) {
          std::string cell = row.contains(cols[i]) ? Scalar(row[cols[i]]) : "";
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
        if (k != key) absl::StrAppend(&out, k, ": ", Scalar(v), "\n");
      }
      return out;
    }
  }
  Yaml(doc, 0, &out);
  return out.empty() ? "{}\n" : out;
}

}  // namespace ppn::ppnctl
