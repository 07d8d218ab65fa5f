#include "tools/ppnctl/command_line.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

const std::vector<std::string> kSettings = {"ca", "endpoint", "output"};

TEST_CASE("words settings and request flags are told apart", "[ppnctl][command_line]") {
  auto cl = ParseCommandLine({"vm", "create", "web", "--spec.memory_mib=256", "--ca", "ca.pem", "-o", "json",
                              "--spec.labels", "team=web", "--dry_run", "--endpoint=h:1"},
                             kSettings);
  REQUIRE(cl.ok());
  CHECK(cl->words == std::vector<std::string>{"vm", "create", "web"});
  CHECK(cl->settings == std::map<std::string, std::string>{{"ca", "ca.pem"}, {"endpoint", "h:1"}, {"output", "json"}});
  CHECK(cl->flags == std::vector<std::pair<std::string, std::string>>{
                         {"spec.memory_mib", "256"}, {"spec.labels", "team=web"}, {"dry_run", "true"}});
  CHECK_FALSE(cl->help);
}

TEST_CASE("help anywhere is help and is never taken as a value", "[ppnctl][command_line]") {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"vm", "create", "x", "--help"},
                                             {"--help", "vm", "create", "x"},
                                             {"migrate", "vm-1", "--to", "-h"},
                                             {"node", "drain", "n1", "--help=yes"},
                                             {"vm", "create", "x", "--spec.image", "--help"}}) {
    auto cl = ParseCommandLine(args, kSettings);
    INFO(args.back());
    REQUIRE(cl.ok());
    CHECK(cl->help);
    for (const auto& [name, value] : cl->flags) CHECK(value == "true");
  }
  SECTION("even when the rest of the line is wrong") {
    auto cl = ParseCommandLine({"-x", "-h"}, kSettings);
    CHECK_FALSE(cl.ok());
    CHECK(ParseCommandLine({"-o", "-h"}, kSettings).status().message() ==
          "-o needs a format: table, wide, json or yaml");
  }
}

TEST_CASE("a value may be a negative number and a flag may repeat", "[ppnctl][command_line]") {
  auto cl =
      ParseCommandLine({"fleet", "x", "--delta", "-5", "--ids", "a", "--ids", "b", "--ca=1", "--ca=2"}, kSettings);
  REQUIRE(cl.ok());
  CHECK(cl->flags == std::vector<std::pair<std::string, std::string>>{{"delta", "-5"}, {"ids", "a"}, {"ids", "b"}});
  CHECK(cl->settings.at("ca") == "2");
}

TEST_CASE("unknown short flags and nameless flags are errors", "[ppnctl][command_line]") {
  auto bad = ParseCommandLine({"vm", "list", "-O", "json"}, kSettings);
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bad.status().message() == "unknown flag \"-O\" (did you mean \"-o\"?); long flags start with --");
  CHECK(ParseCommandLine({"--=x"}, kSettings).status().message() == "\"--=x\": a flag needs a name");
  CHECK(ParseCommandLine({"vm", "list", "-o"}, kSettings).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("-ojson and -o json both set the output and -v is a switch", "[ppnctl][command_line]") {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{{"vm", "list", "-ojson"},
                                                                             {"vm", "list", "-o", "json"},
                                                                             {"vm", "list", "-o=json"},
                                                                             {"-ojson", "vm", "list"}}) {
    auto cl = ParseCommandLine(args, kSettings);
    REQUIRE(cl.ok());
    CHECK(cl->settings.at("output") == "json");
    CHECK(cl->words == std::vector<std::string>{"vm", "list"});
  }
  auto v = ParseCommandLine({"--verbose", "vm", "list", "-v"}, kSettings);
  REQUIRE(v.ok());
  CHECK(v->settings.at("verbose") == "true");
  CHECK(v->words == std::vector<std::string>{"vm", "list"});
}

}  // namespace
}  // namespace ppn::ppnctl
