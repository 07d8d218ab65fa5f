// Guard: every service, RPC, message, field, enum and enum value of the PPN API carries a
// doc comment (the .proto files are the contract, and ppnctl's help comes from them).

#include <fstream>
#include <map>
#include <vector>

#include "catch2/catch.hpp"
#include "google/protobuf/descriptor.pb.h"
#include "tests/harness/subprocess.h"

namespace ppn {
namespace {

using google::protobuf::DescriptorProto;
using google::protobuf::EnumDescriptorProto;
using Path = std::vector<int>;

struct Checker {
  std::map<Path, std::string> comments;
  std::vector<std::string> missing;

  void Need(const Path& path, const std::string& what) {
    auto it = comments.find(path);
    if (it == comments.end() || it->second.find_first_not_of(" \n") == std::string::npos) {
      missing.push_back(what);
    }
  }
  void Enum(const EnumDescriptorProto& e, Path path, const std::string& scope) {
    std::string name = scope + "." + e.name();
    Need(path, name);
    for (int i = 0; i < e.value_size(); ++i) {
      Path p = path;
      p.insert(p.end(), {2, i});
      Need(p, name + "." + e.value(i).name());
    }
  }
  void Message(const DescriptorProto& m, Path path, const std::string& scope) {
    std::string name = scope + "." + m.name();
    Need(path, name);
    for (int i = 0; i < m.field_size(); ++i) {
      Path p = path;
      p.insert(p.end(), {2, i});
      Need(p, name + "." + m.field(i).name());
    }
    for (int i = 0; i < m.nested_type_size(); ++i) {
      if (m.nested_type(i).options().map_entry()) continue;
      Path p = path;
      p.insert(p.end(), {3, i});
      Message(m.nested_type(i), p, name);
    }
    for (int i = 0; i < m.enum_type_size(); ++i) {
      Path p = path;
      p.insert(p.end(), {4, i});
      Enum(m.enum_type(i), p, name);
    }
  }
};

TEST_CASE("every element of the PPN API has a doc comment", "[style][proto]") {
  std::ifstream in(ppn::testing::RunfilePath("proto/ppn_descriptors.pb"), std::ios::binary);
  REQUIRE(in);
  google::protobuf::FileDescriptorSet set;
  REQUIRE(set.ParseFromIstream(&in));
  int files = 0;
  std::vector<std::string> missing;
  for (const auto& file : set.file()) {
    if (file.name().rfind("ppn/", 0) != 0) continue;
    ++files;
    Checker c;
    for (const auto& loc : file.source_code_info().location()) {
      c.comments[Path(loc.path().begin(), loc.path().end())] = loc.leading_comments();
    }
    for (int i = 0; i < file.message_type_size(); ++i) c.Message(file.message_type(i), {4, i}, file.package());
    for (int i = 0; i < file.enum_type_size(); ++i) c.Enum(file.enum_type(i), {5, i}, file.package());
    for (int i = 0; i < file.service_size(); ++i) {
      std::string name = file.package() + "." + file.service(i).name();
      c.Need({6, i}, name);
      for (int j = 0; j < file.service(i).method_size(); ++j) {
        c.Need({6, i, 2, j}, name + "." + file.service(i).method(j).name());
      }
    }
    missing.insert(missing.end(), c.missing.begin(), c.missing.end());
  }
  CHECK(files >= 7);
  for (const auto& m : missing) UNSCOPED_INFO("no doc comment: " << m);
  CHECK(missing.empty());
}

}  // namespace
}  // namespace ppn
