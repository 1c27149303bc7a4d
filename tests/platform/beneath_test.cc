// platform/beneath.h on its own, in both of its modes (openat2 where the kernel has it, and the
// component walk that kernels without it use): only real directories below the base open; a symlink
// anywhere on the way, even one that stays inside, is refused. The real bitsd's use of it (the
// commit race) is in tests/integration/path_safety_test.cc.
#include "platform/beneath.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/platform/scratch_dir.h"

namespace bitsd::testing {
namespace {

bool makeDir(const std::string& path) { return ::mkdir(path.c_str(), 0755) == 0; }
bool symlinkTo(const std::string& target, const std::string& link) { return ::symlink(target.c_str(), link.c_str()) == 0; }

// The helper itself, in both modes (openat2 where the kernel has it, and the component walk that
// kernels without it use).
class Beneath : public ::testing::TestWithParam<platform::BeneathMode> {};

TEST_P(Beneath, OpensOnlyRealDirectoriesBelowTheBase) {
  using platform::openDirBeneath;
  ScratchDir t;
  char real[PATH_MAX];
  ASSERT_NE(::realpath(t.path().c_str(), real), nullptr);
  const std::string base = std::string(real) + "/base";
  ASSERT_TRUE(makeDir(base));
  ASSERT_TRUE(makeDir(base + "/a"));
  ASSERT_TRUE(makeDir(base + "/a/b"));
  ASSERT_TRUE(symlinkTo(base + "/a", base + "/inside"));  // even a symlink that stays inside
  ASSERT_TRUE(symlinkTo("/tmp", base + "/a/out"));
  std::FILE* f = std::fopen((base + "/file").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  ASSERT_TRUE(symlinkTo(base, std::string(real) + "/baselink"));
  const auto mode = GetParam();

  int fd = openDirBeneath(base.c_str(), "a/b", mode);
  ASSERT_GE(fd, 0) << std::strerror(-fd);
  struct stat viaFd, viaPath;
  ASSERT_EQ(::fstat(fd, &viaFd), 0);
  ASSERT_EQ(::stat((base + "/a/b").c_str(), &viaPath), 0);
  EXPECT_EQ(viaFd.st_ino, viaPath.st_ino);
  EXPECT_EQ(::fsync(fd), 0) << "the commit fsyncs this descriptor";
  ::close(fd);
  fd = openDirBeneath(base.c_str(), "", mode);
  ASSERT_GE(fd, 0);
  ::close(fd);
  fd = openDirBeneath(base.c_str(), std::string_view(), mode);  // a destination right in the base
  ASSERT_GE(fd, 0);
  ::close(fd);

  EXPECT_EQ(openDirBeneath(base.c_str(), "inside", mode), -ELOOP);
  EXPECT_EQ(openDirBeneath(base.c_str(), "inside/b", mode), -ELOOP);
  EXPECT_EQ(openDirBeneath(base.c_str(), "a/out", mode), -ELOOP);
  EXPECT_EQ(openDirBeneath((std::string(real) + "/baselink").c_str(), "a", mode), -ELOOP);
  EXPECT_EQ(openDirBeneath(base.c_str(), "missing/b", mode), -ENOENT);
  EXPECT_EQ(openDirBeneath(base.c_str(), "file", mode), -ENOTDIR);
  EXPECT_EQ(openDirBeneath(base.c_str(), "file/b", mode), -ENOTDIR);
  EXPECT_EQ(openDirBeneath(base.c_str(), "a/../a", mode), -EINVAL);
  EXPECT_EQ(openDirBeneath(base.c_str(), "a//b", mode), -EINVAL);
  EXPECT_EQ(openDirBeneath(base.c_str(), "./a", mode), -EINVAL);
}

std::string readAll(const std::string& path) {
  std::string out;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return "<missing>";
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

bool writeAll(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  return std::fclose(f) == 0 && ok;
}

// The commit without replacing (allow-overwrites off): one rename that never replaces (renameat2
// RENAME_NOREPLACE) moves the file, so the source name is gone; an existing name, a symlink
// included, is EEXIST and untouched, and the source stays for the next try. Without `moved`, the
// commit links as before (the source stays; the caller removes it).
TEST_P(Beneath, ACommitThatMayNotReplaceMovesTheFileOrRefuses) {
  using platform::commitBelow;
  ScratchDir t;
  char real[PATH_MAX];
  ASSERT_NE(::realpath(t.path().c_str(), real), nullptr);
  const std::string base = std::string(real) + "/base", from = std::string(real) + "/partial";
  ASSERT_TRUE(makeDir(base));
  ASSERT_TRUE(makeDir(base + "/d"));
  const auto mode = GetParam();

  ASSERT_TRUE(writeAll(from, "upload one"));
  bool opened = false, moved = false;
  int syncErr = -1;
  ASSERT_EQ(commitBelow(from.c_str(), base.c_str(), "d/x.bin", false, &opened, &syncErr, mode, &moved), 0);
  EXPECT_TRUE(opened);
  EXPECT_EQ(syncErr, 0);
  EXPECT_EQ(readAll(base + "/d/x.bin"), "upload one");
  struct stat st;
  if (moved) {
    EXPECT_NE(::lstat(from.c_str(), &st), 0) << "renamed: the partial name is gone";
  } else {  // a file system without RENAME_NOREPLACE: linked
    EXPECT_EQ(readAll(from), "upload one");
    ::unlink(from.c_str());
  }

  ASSERT_TRUE(writeAll(from, "upload two"));
  EXPECT_EQ(commitBelow(from.c_str(), base.c_str(), "d/x.bin", false, &opened, &syncErr, mode, &moved), EEXIST);
  EXPECT_FALSE(moved);
  EXPECT_EQ(readAll(base + "/d/x.bin"), "upload one") << "never replaced";
  EXPECT_EQ(readAll(from), "upload two") << "the source stays for another try";
  ASSERT_TRUE(symlinkTo("/tmp", base + "/d/link"));
  EXPECT_EQ(commitBelow(from.c_str(), base.c_str(), "d/link", false, &opened, &syncErr, mode, &moved), EEXIST);
  EXPECT_EQ(readAll(from), "upload two");

  // Without `moved`: the link, and the source stays.
  ASSERT_EQ(commitBelow(from.c_str(), base.c_str(), "d/y.bin", false, &opened, &syncErr, mode), 0);
  EXPECT_EQ(readAll(base + "/d/y.bin"), "upload two");
  EXPECT_EQ(readAll(from), "upload two");
  // With `replace`: a rename over the name, always reported as moved.
  ASSERT_EQ(commitBelow(from.c_str(), base.c_str(), "d/x.bin", true, &opened, &syncErr, mode, &moved), 0);
  EXPECT_TRUE(moved);
  EXPECT_EQ(readAll(base + "/d/x.bin"), "upload two");
  EXPECT_NE(::lstat(from.c_str(), &st), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, Beneath, ::testing::Values(platform::BeneathMode::Auto, platform::BeneathMode::Walk),
                         [](const ::testing::TestParamInfo<platform::BeneathMode>& i) {
                           return i.param == platform::BeneathMode::Auto ? "Auto" : "Walk";
                         });

}  // namespace
}  // namespace bitsd::testing
