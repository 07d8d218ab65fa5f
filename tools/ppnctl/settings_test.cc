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

TEST_CASE("the current context sits between the environment and the rest of the file", "[ppnctl][settings]") {
  ppn::testing::TempDir dir;
  std::string config = dir.File("config");
  Write(config,
        "ca=file-ca.pem\ncert=file-cert.pem\nkey=file-key.pem\noutput=wide\ncurrent_context=ops\n"
        "[context ops]\nca=ops-ca.pem\ncert=ops-cert.pem\nendpoint=ops:1\ntenant_endpoint=ops-tenant:2\n"
        "[context acme]\nca=acme-ca.pem\ntoken_file=/t/acme\n");
  auto env = FakeEnv({{"PPN_CERT", "env-cert.pem"}});
  auto s = Settings::Load({{"config", config}, {"key", "flag-key.pem"}}, env, kServices);
  REQUIRE(s.ok());
  CHECK(s->context() == "ops");
  CHECK(s->Get("key") == "flag-key.pem");          // flag
  CHECK(s->Get("cert") == "env-cert.pem");         // environment over context
  CHECK(s->Get("ca") == "ops-ca.pem");             // context over file
  CHECK(s->Get("output") == "wide");               // file over default
  CHECK(s->Get("timeout").empty());                // default
  CHECK(s->Endpoint("fleet") == "ops:1");          // the context's endpoint is every service's ...
  CHECK(s->Endpoint("tenant") == "ops-tenant:2");  // ... but its per-service one wins
  CHECK(Settings::Load({{"config", config}, {"endpoint", "flag:9"}}, env, kServices)->Endpoint("tenant") == "flag:9");

  auto acme = Settings::Load({{"config", config}}, FakeEnv({{"PPN_CONTEXT", "acme"}}), kServices);
  REQUIRE(acme.ok());
  CHECK(acme->Get("token_file") == "/t/acme");
  CHECK(acme->Get("ca") == "acme-ca.pem");
  CHECK(acme->Endpoint("fleet") == "127.0.0.1:7102");  // no endpoint in acme: the default
  auto flag = Settings::Load({{"config", config}, {"context", "ops"}}, FakeEnv({{"PPN_CONTEXT", "acme"}}), kServices);
  CHECK(flag->context() == "ops");  // --context over $PPN_CONTEXT

  auto missing = Settings::Load({{"config", config}, {"context", "nope"}}, env, kServices);
  REQUIRE(missing.ok());
  CHECK(missing->context_status().code() == absl::StatusCode::kNotFound);
  CHECK(missing->Get("ca") == "file-ca.pem");

  Write(config, "[context ops]\ncrt=x\n");
  CHECK(Settings::Load({{"config", config}}, env, kServices).status().message() ==
        config + ":2: unknown setting \"crt\" (did you mean \"cert\"?)");
}

TEST_CASE("the default config file honours XDG_CONFIG_HOME", "[ppnctl][settings]") {
  ppn::testing::TempDir dir;
  std::filesystem::create_directories(dir.File("xdg/ppnctl"));
  Write(dir.File("xdg/ppnctl/config"), "ca=xdg.pem\n");
  auto s = Settings::Load({}, FakeEnv({{"HOME", dir.path()}, {"XDG_CONFIG_HOME", dir.File("xdg")}}), kServices);
  REQUIRE(s.ok());
  CHECK(s->config_path() == dir.File("xdg/ppnctl/config"));
  CHECK(s->Get("ca") == "xdg.pem");
}

}  // namespace
}  // namespace ppn::ppnctl
