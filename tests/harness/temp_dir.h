#pragma once

// TempDir is a fresh directory under $TEST_TMPDIR (or /tmp), removed with its contents when
// the object is destroyed.

#include <string>

namespace ppn::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace ppn::testing
