#include "tools/ppnctl/api.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.pb.h"

namespace ppn::ppnctl {

extern const unsigned char kDescriptorSet[];
extern const size_t kDescriptorSetSize;

namespace {

std::string Norm(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c != '-' && c != '_') out.push_back(absl::ascii_tolower(c));
  }
  return out;
}

std::string Trim(const std::string& comment) {
  std::string s(absl::StripAsciiWhitespace(comment));
  return absl::StrReplaceAll(s, {{"\n ", "\n"}});
}

}  // namespace

std::string Kebab(const std::string& camel) {
  std::string out;
  for (size_t i = 0; i < camel.size(); ++i) {
    char c = camel[i];
    if (absl::ascii_isupper(c) && i > 0 && !absl::ascii_isupper(camel[i - 1])) out.push_back('-');
    out.push_back(absl::ascii_tolower(c));
  }
  return out;
}

const Api& Api::Get() {
  static const Api* api = new Api();
  return *api;
}

Api::Api() : factory_(&pool_) {
  google::protobuf::FileDescriptorSet set;
  if (!set.ParseFromArray(kDescriptorSet, static_cast<int>(kDescriptorSetSize))) std::abort();
  for (const auto& file : set.file()) {
    if (pool_.BuildFile(file) == nullptr) std::abort();
  }
  for (const auto& file : set.file()) {
    if (!absl::StartsWith(file.package(), "ppn.")) continue;
    const google::protobuf::FileDescriptor* fd = pool_.FindFileByName(file.name());
    for (int s = 0; s < fd->service_count(); ++s) {
      const auto* svc = fd->service(s);
      std::string name(absl::StripSuffix(svc->name(), "Service"));
      for (int m = 0; m < svc->method_count(); ++m) {
        commands_.push_back({Kebab(name), Kebab(svc->method(m)->name()), svc->method(m)});
      }
    }
  }
}

absl::StatusOr<const Command*> Api::Find(const std::string& service, const std::string& rpc) const {
  std::vector<std::string> rpcs;
  bool service_found = false;
  for (const Command& c : commands_) {
    if (Norm(c.service_command) != Norm(service)) continue;
    service_found = true;
    if (Norm(c.rpc_command) == Norm(rpc)) return &c;
    rpcs.push_back(c.rpc_command);
  }
  if (!service_found) {
    return absl::NotFoundError(
        absl::StrCat("unknown service \"", service, "\"; services: ", absl::StrJoin(Services(), ", ")));
  }
  return absl::NotFoundError(
      absl::StrCat("unknown rpc \"", rpc, "\" of ", service, "; rpcs: ", absl::StrJoin(rpcs, ", ")));
}

std::vector<std::string> Api::Services() const {
  std::vector<std::string> out;
  for (const Command& c : commands_) {
    if (out.empty() || out.back() != c.service_command) out.push_back(c.service_command);
  }
  return out;
}

std::string Api::Comment(const google::protobuf::Descriptor* d) const {
  google::protobuf::SourceLocation loc;
  return d->GetSourceLocation(&loc) ? Trim(loc.leading_comments) : "";
}
std::string Api::Comment(const google::protobuf::FieldDescriptor* f) const {
  google::protobuf::SourceLocation loc;
  return f->GetSourceLocation(&loc) ? Trim(loc.leading_comments) : "";
}
std::string Api::Comment(const google::protobuf::MethodDescriptor* m) const {
  google::protobuf::SourceLocation loc;
  return m->GetSourceLocation(&loc) ? Trim(loc.leading_comments) : "";
}
std::string Api::Comment(const google::protobuf::ServiceDescriptor* s) const {
  google::protobuf::SourceLocation loc;
  return s->GetSourceLocation(&loc) ? Trim(loc.leading_comments) : "";
}

std::unique_ptr<google::protobuf::Message> Api::NewMessage(const google::protobuf::Descriptor* d) const {
  return std::unique_ptr<google::protobuf::Message>(factory_.GetPrototype(d)->New());
}

}  // namespace ppn::ppnctl
