// Tests of UvStorage::write on a real libuv loop and a real file, both ways it runs: uv_fs_write
// (writeback off) and pwrite + sync_file_range on the thread pool (setWritebackBytes, what bitsd
// uses with fdatasync on). Same bytes on disk, same results, the digest fed alongside (by a second
// work item beside a large span, after the write in the same item for a span of 64 KiB or less),
// and a failed write reported as a Status.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "platform/sha256.h"
#include "platform/uv_storage.h"

namespace bitsd::platform {
namespace {

struct Done : StorageCallback {
  int calls = 0;
  void onStorageDone(StorageOp& op) override {
    ++calls;
    op.busy = false;
  }
};

class UvStorageWrite : public ::testing::TestWithParam<uint64_t> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bitsd-storage-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/f";
    uv_loop_init(&loop_);
  }
  void TearDown() override {
    uv_loop_close(&loop_);
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  // One write through `storage`, run to completion.
  void write(UvStorage& storage, int fd, uint64_t at, const std::string& data, Sha256State* hash, StorageOp& op) {
    op.callback = &done_;
    op.busy = true;
    const int before = done_.calls;
    storage.write(op, fd, at, std::span<const char>(data.data(), data.size()), hash);
    uv_run(&loop_, UV_RUN_DEFAULT);
    ASSERT_EQ(done_.calls, before + 1);
  }
  std::string fileBytes() {
    std::ifstream f(path_, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  uv_loop_t loop_;
  std::string dir_, path_;
  Done done_;
};

TEST_P(UvStorageWrite, WritesEverySpanAtItsOffsetAndHashesItWhole) {
  UploadSha256 sha;
  UvStorage storage(&loop_, sha);
  storage.setWritebackBytes(GetParam());
  int fd = ::open(path_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(7);
  std::string all;
  Sha256State st, want;
  sha.start(st);
  sha.start(want);
  // Spans of odd sizes, some crossing 64 KiB and 1 MiB boundaries, some not.
  for (size_t n : {size_t{1}, size_t{70000}, size_t{300000}, size_t{65536}, size_t{1 << 20}, size_t{5}, size_t{900001}}) {
    std::string span(n, '\0');
    for (auto& c : span) c = static_cast<char>(rng());
    StorageOp op;
    write(storage, fd, all.size(), span, &st, op);
    ASSERT_TRUE(op.status.isOk()) << op.status.message();
    EXPECT_EQ(op.result, static_cast<int64_t>(n));
    all += span;
    sha.update(want, std::span<const char>(span.data(), span.size()));
  }
  ::close(fd);
  EXPECT_EQ(fileBytes(), all);
  uint8_t a[32], b[32];
  sha.finish(st, a);
  sha.finish(want, b);
  EXPECT_EQ(0, std::memcmp(a, b, 32));
}

TEST_P(UvStorageWrite, AFailedWriteIsAStatusWithNoBytes) {
  UploadSha256 sha;
  UvStorage storage(&loop_, sha);
  storage.setWritebackBytes(GetParam());
  int fd = ::open(path_.c_str(), O_CREAT | O_RDONLY | O_CLOEXEC, 0644);  // not open for writing: EBADF
  ASSERT_GE(fd, 0);
  for (size_t n : {size_t{200000}, size_t{1000}}) {  // the digest beside the write, and after it
    std::string data(n, 'x');
    Sha256State st;
    sha.start(st);
    StorageOp op;
    write(storage, fd, 0, data, &st, op);
    EXPECT_FALSE(op.status.isOk());
    EXPECT_EQ(op.status.code(), Code::Io);
    EXPECT_EQ(op.result, 0);
  }
  ::close(fd);
}

// 0: uv_fs_write; 64 KiB and 1 MiB: pwrite + sync_file_range.
INSTANTIATE_TEST_SUITE_P(Writeback, UvStorageWrite, ::testing::Values(0, 65536, 1 << 20));

}  // namespace
}  // namespace bitsd::platform
