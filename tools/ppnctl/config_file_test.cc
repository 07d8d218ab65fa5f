#include "tools/ppnctl/config_file.h"

#include <sys/stat.h>

#include "catch2/catch.hpp"
#include "common/files.h"
#include "tests/harness/temp_dir.h"

namespace ppn::ppnctl {
namespace {

TEST_CASE("contexts are parsed written back and read again the same", "[ppnctl][config]") {
  auto config = ParseConfig(
      "# mine\noutput=yaml\ncurrent_context=state\n[context state]\nca=/s/ca.pem\ncert = /s/op.pem\n"
      "[context state-acme]\ntoken-file=/s/acme.token\n",
      "cfg");
  REQUIRE(config.ok());
  CHECK(config->top.at("output") == "yaml");
  CHECK(config->current() == "state");
  REQUIRE(config->Context("state-acme") != nullptr);
  CHECK(config->Context("state-acme")->at("token_file") == "/s/acme.token");
  auto again = ParseConfig(SerializeConfig(*config), "cfg");
  REQUIRE(again.ok());
  CHECK(SerializeConfig(*again) == SerializeConfig(*config));
}

TEST_CASE("a malformed config names its line", "[ppnctl][config]") {
  CHECK(ParseConfig("a=1\n[ctx x]\n", "cfg").status().message() == "cfg:2: want [context NAME]");
  CHECK(ParseConfig("[context a]\n[context a]\n", "cfg").status().message() == "cfg:2: context \"a\" appears twice");
  CHECK(ParseConfig("[context ../x]\n", "cfg").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("set-context merges, keeps one way to authenticate, and use-context needs a known one", "[ppnctl][config]") {
  ConfigFile config;
  REQUIRE(SetContext(&config, "prod", {{"ca", "/ca.pem"}, {"cert", "/op.pem"}, {"key", "/op.key"}}).ok());
  REQUIRE(SetContext(&config, "prod", {{"endpoint", "10.0.0.1:7000"}}).ok());
  CHECK(*config.Context("prod") ==
        ConfigFile::Keys{{"ca", "/ca.pem"}, {"cert", "/op.pem"}, {"endpoint", "10.0.0.1:7000"}, {"key", "/op.key"}});
  REQUIRE(SetContext(&config, "prod", {{"token_file", "/t"}}).ok());
  CHECK(config.Context("prod")->count("cert") == 0);
  CHECK(SetContext(&config, "x", {{"token_file", "/t"}, {"cert", "/c"}}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(config.Context("x") == nullptr);  // nothing left behind
  CHECK(SetContext(&config, "a b", {}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(UseContext(&config, "nope").message() == "no context \"nope\"; known: prod");
  REQUIRE(UseContext(&config, "prod").ok());
  CHECK(config.current() == "prod");
  CHECK(RenderContexts(config) ==
        "CURRENT  NAME  ENDPOINT       CA       AUTH\n"
        "*        prod  10.0.0.1:7000  /ca.pem  token file /t\n");
}

TEST_CASE("the config is saved with mode 0600 in a directory it makes", "[ppnctl][config]") {
  ppn::testing::TempDir dir;
  std::string path = dir.path() + "/a/ppnctl/config";
  ConfigFile config;
  REQUIRE(SetContext(&config, "c", {{"ca", "/ca.pem"}}).ok());
  REQUIRE(SaveConfig(config, path).ok());
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(*ReadFile(path) == SerializeConfig(config));
}

}  // namespace
}  // namespace ppn::ppnctl
