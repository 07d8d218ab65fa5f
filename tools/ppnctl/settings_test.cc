#include "tools/ppnctl/settings.h"

#include <filesystem>
#include <fstream>

#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn::ppnctl {
namespace {

Settings::Env FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

const std::vector<std::string> kServices = {"fleet", "pairing-admin", "tenant"};

TEST_CASE("a flag beats the environment which beats the config file which beats the default", "[ppnctl][settings]") {
  ppn::testing::TempDir dir;
  std::string config = dir.File("config");
  Write(config,
        "# operator settings\n"
        "ca = file-ca.pem\n"
        "cert=file-cert.pem\n"
        "key=file-key.pem\n"
        "fleet_endpoint=file:1\n"
        "pairing-admin_endpoint = file:2\n"
        "tenant_endpoint=file:3\n");
  auto env = FakeEnv({{"HOME", dir.path()},
                      {"PPN_CA", "env-ca.pem"},
                      {"PPN_CERT", "env-cert.pem"},
                      {"PPN_FLEET_ENDPOINT", "env:1"},
                      {"PPN_PAIRING_ADMIN_ENDPOINT", "env:2"}});
  auto s = Settings::Load({{"config", config}, {"ca", "flag-ca.pem"}}, env, kServices);
  REQUIRE(s.ok());
  CHECK(s->Get("ca") == "flag-ca.pem");     // flag
  CHECK(s->Get("cert") == "env-cert.pem");  // environment over file
  CHECK(s->Get("key") == "file-key.pem");   // file over default
  CHECK(s->Get("output") == "table");       // default
  CHECK(s->IsSet("key"));
  CHECK_FALSE(s->IsSet("output"));
  CHECK(s->Endpoint("fleet") == "env:1");
  CHECK(s->Endpoint("pairing-admin") == "env:2");
  CHECK(s->Endpoint("tenant") == "file:3");
  CHECK(s->Endpoint("scheduler") == "127.0.0.1:7103");  // tools/ports
  CHECK(s->Endpoint("nothing").empty());

  auto all = Settings::Load({{"config", config}, {"endpoint", "flag:9"}}, env, kServices);
  REQUIRE(all.ok());
  CHECK(all->Endpoint("fleet") == "flag:9");
  CHECK(all->Endpoint("scheduler") == "flag:9");
}

TEST_CASE("the config file is --config then PPNCTL_CONFIG then the one under HOME", "[ppnctl][settings]") {
  ppn::testing::TempDir dir;
  Write(dir.File("named"), "ca=named.pem\n");
  Write(dir.File("from-env"), "ca=env.pem\n");
  std::filesystem::create_directories(dir.File(".config/ppnctl"));
  Write(dir.File(".config/ppnctl/config"), "ca=home.pem\n");
  auto home = FakeEnv({{"HOME", dir.path()}});
  auto both = FakeEnv({{"HOME", dir.path()}, {"PPNCTL_CONFIG", dir.File("from-env")}});
  CHECK(Settings::Load({{"config", dir.File("named")}}, both, kServices)->Get("ca") == "named.pem");
  CHECK(Settings::Load({}, both, kServices)->Get("ca") == "env.pem");
  CHECK(Settings::Load({}, home, kServices)->Get("ca") == "home.pem");
  CHECK(Settings::Load({}, home, kServices)->config_path() == dir.File(".config/ppnctl/config"));
  CHECK(Settings::Load({}, home, kServices)->Get("known_ledgers") == dir.File(".config/ppnctl/known_ledgers"));
}

TEST_CASE("a missing default config file is fine and a missing named one is an error", "[ppnctl][settings]") {
  ppn::testing::TempDir dir;
  auto env = FakeEnv({{"HOME", dir.path()}});
  auto none = Settings::Load({}, env, kServices);
  REQUIRE(none.ok());
  CHECK(none->Get("ca") == "state/pki/ca.pem");
  auto named = Settings::Load({{"config", dir.File("absent")}}, env, kServices);
  CHECK(named.status().code() == absl::StatusCode::kNotFound);
  CHECK(named.status().message().find("config file: ") == 0);
  SECTION("without HOME nothing is read from it") {
    auto homeless = Settings::Load({}, FakeEnv({}), kServices);
    REQUIRE(homeless.ok());
    CHECK(homeless->Get("known_ledgers").empty());
  }
}

TEST_CASE("a config line that names no setting is refused with the nearest one", "[ppnctl][settings]") {
  ppn::testing::TempDir dir;
  std::string config = dir.File("config");
  auto env = FakeEnv({});
  Write(config, "ca=x\n\ncrt=y\n");
  auto typo = Settings::Load({{"config", config}}, env, kServices);
  CHECK(typo.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(typo.status().message() == config + ":3: unknown setting \"crt\" (did you mean \"cert\"?)");
  Write(config, "fleet_endpont=h:1\n");
  CHECK(Settings::Load({{"config", config}}, env, kServices).status().message() ==
        config + ":1: unknown setting \"fleet_endpont\" (did you mean \"fleet_endpoint\"?)");
  Write(config, "just words\n");
  CHECK(Settings::Load({{"config", config}}, env, kServices).status().message() == config + ":1: want key=value");
  Write(config, "endpoint=h:1\n");  // --endpoint is a flag only: per service in the file
  CHECK_FALSE(Settings::Load({{"config", config}}, env, kServices).ok());
}

}  // namespace
}  // namespace ppn::ppnctl
