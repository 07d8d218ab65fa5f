#include "tools/ppnctl/request_builder.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "tools/ppnctl/suggest.h"

namespace ppn::ppnctl {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::Status Bad(const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("--", path, ": ", why));
}

absl::StatusOr<std::string> Contents(const std::string& value) {
  if (!absl::StartsWith(value, "@")) return value;
  return ReadFile(value.substr(1));
}

// Sets a singular or appends a repeated non-message value.
absl::Status SetScalar(Message* m, const FieldDescriptor* f, const std::string& path, const std::string& value) {
  const Reflection* r = m->GetReflection();
  bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING: {
      absl::StatusOr<std::string> v = Contents(value);
      if (!v.ok()) return Bad(path, std::string(v.status().message()));
      rep ? r->AddString(m, f, *v) : r->SetString(m, f, *v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (!absl::SimpleAtob(value, &v)) return Bad(path, "want true or false");
      rep ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* e = f->enum_type();
      const google::protobuf::EnumValueDescriptor* found = nullptr;
      std::string want = absl::AsciiStrToUpper(value);
      for (int i = 0; i < e->value_count(); ++i) {
        const std::string& n = e->value(i)->name();
        if (n == want || absl::EndsWith(n, "_" + want)) found = e->value(i);
      }
      if (found == nullptr) {
        std::vector<std::string> names;
        for (int i = 0; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
        return Bad(path, absl::StrCat("unknown value \"", value, "\"", DidYouMean(want, names), "; one of ",
                                      absl::StrJoin(names, ", ")));
      }
      rep ? r->AddEnum(m, f, found) : r->SetEnum(m, f, found);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) return Bad(path, "want an integer");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT32) {
        rep ? r->AddInt32(m, f, static_cast<int32_t>(v)) : r->SetInt32(m, f, static_cast<int32_t>(v));
      } else {
        rep ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(value, &v)) return Bad(path, "want a non-negative integer");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32) {
        rep ? r->AddUInt32(m, f, static_cast<uint32_t>(v)) : r->SetUInt32(m, f, static_cast<uint32_t>(v));
      } else {
        rep ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!absl::SimpleAtod(value, &v)) return Bad(path, "want a number");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
        rep ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
      } else {
        rep ? r->AddFloat(m, f, static_cast<float>(v)) : r->SetFloat(m, f, static_cast<float>(v));
      }
      return absl::OkStatus();
    }
    default: return Bad(path, "unsupported field type");
  }
}

// Durations, timestamps and other messages.
absl::Status SetMessageValue(Message* target, const std::string& path, const std::string& value) {
  const std::string& type = target->GetDescriptor()->full_name();
  const Reflection* r = target->GetReflection();
  const auto* d = target->GetDescriptor();
  if (type == "google.protobuf.Duration") {
    absl::Duration dur;
    if (!absl::ParseDuration(value, &dur)) return Bad(path, "want a duration such as 90s, 5m or 1h30m");
    int64_t ns = absl::ToInt64Nanoseconds(dur);
    r->SetInt64(target, d->FindFieldByName("seconds"), ns / 1000000000);
    r->SetInt32(target, d->FindFieldByName("nanos"), static_cast<int32_t>(ns % 1000000000));
    return absl::OkStatus();
  }
  if (type == "google.protobuf.Timestamp") {
    absl::Time t;
    std::string err;
    if (!absl::ParseTime(absl::RFC3339_full, value, &t, &err)) return Bad(path, "want an RFC 3339 time");
    int64_t ns = absl::ToUnixNanos(t);
    r->SetInt64(target, d->FindFieldByName("seconds"), ns / 1000000000);
    r->SetInt32(target, d->FindFieldByName("nanos"), static_cast<int32_t>(ns % 1000000000));
    return absl::OkStatus();
  }
  absl::Status s = MergeJson(target, value);
  if (!s.ok()) return Bad(path, absl::StrCat("want JSON for ", type, ": ", s.message()));
  return absl::OkStatus();
}

bool Settable(const FieldDescriptor* f) {
  return f->message_type() == nullptr || f->is_map() || f->is_repeated() ||
         absl::StartsWith(f->message_type()->full_name(), "google.protobuf.");
}

void AddPaths(const google::protobuf::Descriptor* d, const std::string& prefix, int depth,
              std::vector<std::string>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    out->push_back(prefix + f->name());
    if (!Settable(f) && depth < 3) AddPaths(f->message_type(), prefix + f->name() + ".", depth + 1, out);
  }
}

}  // namespace

bool IsFieldPath(const google::protobuf::Descriptor* type, const std::string& path) {
  const google::protobuf::Descriptor* d = type;
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* f = d == nullptr ? nullptr : d->FindFieldByName(parts[i]);
    if (f == nullptr) return false;
    if (i + 1 == parts.size()) return true;
    if (f->message_type() == nullptr || f->is_map() || f->is_repeated()) return false;
    d = f->message_type();
  }
  return false;
}

std::vector<std::string> FieldPaths(const google::protobuf::Descriptor* type) {
  std::vector<std::string> out;
  AddPaths(type, "", 0, &out);
  return out;
}

absl::Status MergeJson(Message* message, const std::string& json) {
  google::protobuf::util::JsonParseOptions options;
  auto s = google::protobuf::util::JsonStringToMessage(json, message, options);
  if (!s.ok()) return absl::InvalidArgumentError(std::string(s.message()));
  return absl::OkStatus();
}

absl::Status SetField(Message* message, const std::string& path, const std::string& value) {
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  Message* m = message;
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(parts[i]);
    if (f == nullptr) {
      std::vector<std::string> names;
      for (int j = 0; j < m->GetDescriptor()->field_count(); ++j) names.push_back(m->GetDescriptor()->field(j)->name());
      return Bad(path, absl::StrCat("no field \"", parts[i], "\" in ", m->GetDescriptor()->name(),
                                    " (fields: ", absl::StrJoin(names, ", "), ")"));
    }
    const Reflection* r = m->GetReflection();
    bool last = i + 1 == parts.size();
    if (f->is_map()) {
      if (!last) return Bad(path, "map entries are set as --field=key=value");
      std::vector<std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
      if (kv.size() != 2) return Bad(path, "want key=value");
      Message* entry = r->AddMessage(m, f);
      absl::Status s = SetScalar(entry, entry->GetDescriptor()->FindFieldByName("key"), path, kv[0]);
      if (s.ok()) s = SetScalar(entry, entry->GetDescriptor()->FindFieldByName("value"), path, kv[1]);
      return s;
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        if (!last) return Bad(path, "give each element of a repeated message as JSON: --" + parts[i] + "='{...}'");
        return SetMessageValue(r->AddMessage(m, f), path, value);
      }
      m = r->MutableMessage(m, f);
      if (last) return SetMessageValue(m, path, value);
      continue;
    }
    if (!last) return Bad(path, absl::StrCat(parts[i], " is not a message"));
    return SetScalar(m, f, path, value);
  }
  return absl::OkStatus();
}

}  // namespace ppn::ppnctl
