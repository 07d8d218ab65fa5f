#include "common/files.h"

#include <sys/stat.h>

#include <filesystem>

#include "catch2/catch.hpp"
#include "tests/harness/temp_dir.h"

namespace ppn {
namespace {

TEST_CASE("a file written atomically reads back whole with its mode and leaves no temporary", "[common][files]") {
  testing::TempDir dir;
  std::string path = dir.File("key");
  REQUIRE(WriteFileAtomically(path, "first", 0600).ok());
  REQUIRE(WriteFileAtomically(path, std::string(100000, 'x'), 0600).ok());
  absl::StatusOr<std::string> back = ReadFile(path);
  REQUIRE(back.ok());
  CHECK(*back == std::string(100000, 'x'));
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    CHECK(e.path().filename() == "key");
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("reading a missing file is NOT_FOUND naming the path", "[common][files]") {
  absl::StatusOr<std::string> s = ReadFile("/nonexistent/ppn-file");
  REQUIRE(s.status().code() == absl::StatusCode::kNotFound);
  CHECK(s.status().message().find("/nonexistent/ppn-file") != absl::string_view::npos);
}

TEST_CASE("writing into a missing directory fails naming the path", "[common][files]") {
  absl::Status s = WriteFileAtomically("/nonexistent/dir/file", "x");
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(s.message().find("/nonexistent/dir/file") != absl::string_view::npos);
}

TEST_CASE("the tail of a file is its last bytes without trailing newlines", "[common][files]") {
  testing::TempDir dir;
  std::string path = dir.File("log");
  REQUIRE(WriteFileAtomically(path, "line one\nline two\nqemu: could not open disk\n\n").ok());
  CHECK(ReadFileTail(path, 27) == "qemu: could not open disk");  // 25 bytes and two newlines
  CHECK(ReadFileTail(path, 1000) == "line one\nline two\nqemu: could not open disk");
  CHECK(ReadFileTail(dir.File("missing")).empty());
}

}  // namespace
}  // namespace ppn
