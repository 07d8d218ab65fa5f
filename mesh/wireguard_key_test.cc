#include "mesh/wireguard_key.h"

#include <sys/stat.h>

#include <fstream>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn::mesh {
namespace {

void Write(const std::string& path, const std::string& content, mode_t mode) {
  std::ofstream(path) << content;
  chmod(path.c_str(), mode);
}

TEST_CASE("a generated key pair has WireGuard's form and the public key derives from the private",
          "[mesh][wireguard_key]") {
  WireGuardKeyPair pair = *GenerateKeyPair();
  CHECK(pair.private_key.size() == 44);
  CHECK(IsWireGuardKey(pair.private_key));
  CHECK(IsWireGuardKey(pair.public_key));
  CHECK(*PublicKeyOf(pair.private_key) == pair.public_key);
  // RFC 7748 section 6.1: Alice's private and public keys.
  CHECK(*PublicKeyOf("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=") == "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
  CHECK(!IsWireGuardKey(""));
  CHECK(!IsWireGuardKey(std::string(44, '!')));
  CHECK(PublicKeyOf("short").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("the key file must be owner-only and hold one WireGuard key", "[mesh][wireguard_key]") {
  ppn::testing::TempDir dir;
  std::string path = dir.File("wg.key");
  WireGuardKeyPair pair = *GenerateKeyPair();

  SECTION("a good file") {
    Write(path, pair.private_key + "\n", 0600);
    absl::StatusOr<WireGuardKeyPair> read = ReadPrivateKeyFile(path);
    REQUIRE(read.ok());
    CHECK(read->public_key == pair.public_key);
  }
  SECTION("a missing file") {
    CHECK(ReadPrivateKeyFile(path).status().message() == "WireGuard key file " + path + " does not exist");
    CHECK(ReadPrivateKeyFile(path).status().code() == absl::StatusCode::kNotFound);
  }
  SECTION("a file others may read") {
    Write(path, pair.private_key + "\n", 0644);
    absl::Status s = ReadPrivateKeyFile(path).status();
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(s.message() == "WireGuard key file " + path +
                             " has mode 0644: group and others must have no access (chmod 600 " + path + ")");
  }
  SECTION("a file that holds something else, never quoted") {
    Write(path, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIHAHbQpzGKV9PBbBclGyZkXfTC+H68CZKrF3+6UduSwq\n",
          0600);
    absl::Status s = ReadPrivateKeyFile(path).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(s.message(), "does not hold a WireGuard private key"));
    CHECK(!absl::StrContains(s.message(), "MC4CAQ"));
  }
  SECTION("a directory") {
    CHECK(ReadPrivateKeyFile(dir.path()).status().code() == absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("a missing key file is created once with mode 0600 and then reused", "[mesh][wireguard_key]") {
  ppn::testing::TempDir dir;
  std::string path = dir.File("founding-wg.key");
  bool created = false;
  WireGuardKeyPair first = *LoadOrCreatePrivateKeyFile(path, &created);
  CHECK(created);
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  WireGuardKeyPair second = *LoadOrCreatePrivateKeyFile(path, &created);
  CHECK(!created);
  CHECK(second.public_key == first.public_key);
  chmod(path.c_str(), 0640);
  CHECK(LoadOrCreatePrivateKeyFile(path).status().code() == absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ppn::mesh
