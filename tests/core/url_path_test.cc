// The request-target to upload-path mapping (core/url_path.*), the first line of the path defences
// (platform/beneath.* is the second): percent-decoding exactly once, dot and empty segments,
// everything that could leave the upload root or name a directory, and the length limits.
#include "core/url_path.h"

#include <gtest/gtest.h>

#include <string>

namespace bitsd {
namespace {

struct Resolved {
  PathError error;
  std::string path;
  std::string query;
};

Resolved resolve(const std::string& target, size_t max = 1024) {
  std::string buf(max, '\0');
  UploadPath up;
  PathError e = resolveUploadPath(target, max, buf.data(), &up);
  return {e, e == PathError::None ? std::string(up.relative) : "", std::string(up.query)};
}

TEST(UrlPath, NormalisesDotsAndEmptySegments) {
  EXPECT_EQ(resolve("/a/b.iso").path, "a/b.iso");
  EXPECT_EQ(resolve("//a///./b.iso").path, "a/b.iso");
  EXPECT_EQ(resolve("/./x").path, "x");
}

TEST(UrlPath, DecodesPercentOnce) {
  EXPECT_EQ(resolve("/my%20file.txt").path, "my file.txt");
  EXPECT_EQ(resolve("/%2541").path, "%41");  // decoded exactly once
}

TEST(UrlPath, SplitsQueryAndStripsAbsoluteForm) {
  Resolved r = resolve("/up/f.bin?ACCOUNT=86433");
  EXPECT_EQ(r.path, "up/f.bin");
  EXPECT_EQ(r.query, "ACCOUNT=86433");
  EXPECT_EQ(resolve("http://appliance:8080/up/f.bin").path, "up/f.bin");
  EXPECT_EQ(resolve("HTTPS://appliance/f").path, "f");
}

class RefusedPath : public ::testing::TestWithParam<std::pair<const char*, PathError>> {};

TEST_P(RefusedPath, IsRefused) {
  auto [target, expected] = GetParam();
  EXPECT_EQ(resolve(target).error, expected) << target;
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, RefusedPath,
    ::testing::Values(std::make_pair("/../etc/passwd", PathError::Traversal),
                      std::make_pair("/a/../../b", PathError::Traversal),
                      std::make_pair("/a/..", PathError::Traversal),
                      std::make_pair("/%2e%2e/x", PathError::Traversal),
                      std::make_pair("/a%2fb", PathError::Traversal),
                      std::make_pair("/a%2Fb", PathError::Traversal),
                      std::make_pair("/a\\b", PathError::Traversal),
                      std::make_pair("/a%5cb", PathError::Traversal),
                      std::make_pair("/a%00b", PathError::Malformed),
                      std::make_pair("/a%0ab", PathError::Malformed),
                      std::make_pair("/a%zzb", PathError::Malformed),
                      std::make_pair("/a%4", PathError::Malformed),
                      std::make_pair("/a%", PathError::Malformed),
                      std::make_pair("a/b", PathError::Malformed),
                      std::make_pair("", PathError::Malformed),
                      std::make_pair("/", PathError::Directory),
                      std::make_pair("/dir/", PathError::Directory),
                      std::make_pair("/dir/.", PathError::Directory),
                      std::make_pair("http://host", PathError::Directory),
                      // Added when the test first ran in ctest (issue 16):
                      std::make_pair("/.%2e/x", PathError::Traversal),
                      std::make_pair("/%2E%2E", PathError::Traversal),
                      std::make_pair("http://host/../x", PathError::Traversal),
                      std::make_pair("/a/b/../../../c", PathError::Traversal),
                      std::make_pair("/a\tb", PathError::Malformed),
                      std::make_pair("/a\x7f" "b", PathError::Malformed),
                      std::make_pair("/a%7Fb", PathError::Malformed),
                      std::make_pair("/a#b", PathError::Malformed),
                      std::make_pair("/a%2", PathError::Malformed),
                      std::make_pair("/?x=1", PathError::Directory),
                      // The authority ends at '?' or '#' too: no path there, whatever follows.
                      std::make_pair("http://host?/a", PathError::Directory),
                      std::make_pair("http://host?x=/../a", PathError::Directory),
                      std::make_pair("http://host#/a", PathError::Directory)));

TEST(UrlPath, DecodesOnceSoDoubleEncodedDotsStayNames) {
  EXPECT_EQ(resolve("/%252e%252e/x").path, "%2e%2e/x");
  EXPECT_EQ(resolve("/%2e/x").path, "x");
  EXPECT_EQ(resolve("/...").path, "...");
  EXPECT_EQ(resolve("/..a/b..").path, "..a/b..");
}

TEST(UrlPath, TheQueryNeverReachesThePath) {
  Resolved r = resolve("/a?../../etc/passwd");
  EXPECT_EQ(r.error, PathError::None);
  EXPECT_EQ(r.path, "a");
  EXPECT_EQ(r.query, "../../etc/passwd");
  EXPECT_EQ(resolve("/a%3Fb").path, "a?b");  // an encoded '?' is part of the name
}

TEST(UrlPath, LengthLimits) {
  EXPECT_EQ(resolve("/" + std::string(100, 'a'), 100).error, PathError::None);
  EXPECT_EQ(resolve("/" + std::string(101, 'a'), 100).error, PathError::TooLong);
  EXPECT_EQ(resolve("/" + std::string(256, 'a'), 1024).error, PathError::TooLong);  // segment > 255
  EXPECT_EQ(resolve("/" + std::string(255, 'a'), 1024).error, PathError::None);
  EXPECT_EQ(resolve("/" + std::string(256, 'a') + "/b", 1024).error, PathError::TooLong);  // not only the last
  EXPECT_EQ(resolve("/abc/defg", 8).error, PathError::None);  // "abc/defg": exactly 8
  EXPECT_EQ(resolve("/abc/defgh", 8).error, PathError::TooLong);
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "/abcd";
  EXPECT_EQ(resolve(deep, 1024).error, PathError::TooLong);
}

TEST(HostHeader, ValidHostsAndPortsOnly) {
  for (const char* good : {"", "a", "appliance.example", "appliance:8080", "10.0.0.1", "10.0.0.1:80", "[::1]",
                           "[fe80::1]:8080", "[::ffff:10.0.0.1]", "host:", "host:65535", "a-b_c~d", "%41b", "x!$&'()*+,;=y"}) {
    EXPECT_TRUE(isValidHostHeader(good)) << good;
  }
  for (const char* bad : {"a b", "a/b", "a?b", "a#b", "user@host", "[::1", "[::1]x", "[zz::1]", "[]", "::1", ":80",
                          "host:8o", "host:123456", "host:65536", "host:99999", "%4", "%zz", "a\tb", "h\xc3\xa9"}) {
    EXPECT_FALSE(isValidHostHeader(bad)) << bad;
  }
}

}  // namespace
}  // namespace bitsd
