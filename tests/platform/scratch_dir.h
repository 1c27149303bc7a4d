// A fresh directory under $TMPDIR (or /tmp) for a platform test, removed with its contents on
// destruction (the platform tests do not link the integration harness, tests/integration/bitsd_process.h).
#pragma once

#include <ftw.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace bitsd::testing {

class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/bitsd-platform-test-XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    path_ = p != nullptr ? p : "";
  }
  ~ScratchDir() {
    if (!path_.empty()) ::nftw(path_.c_str(), removeEntry, 16, FTW_DEPTH | FTW_PHYS);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  static int removeEntry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path); }
  std::string path_;
};

}  // namespace bitsd::testing
