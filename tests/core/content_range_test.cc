#include "core/content_range.h"

#include <gtest/gtest.h>

namespace bitsd {
namespace {

TEST(ContentRange, ParsesInclusiveWireRangeAsHalfOpen) {
  ByteRange r;
  ASSERT_TRUE(parseContentRange("bytes 0-4891/4892", &r));
  EXPECT_EQ(r.begin, 0u);
  EXPECT_EQ(r.end, 4892u);
  EXPECT_EQ(r.total, 4892u);
  EXPECT_EQ(r.size(), 4892u);
}

TEST(ContentRange, OffsetsBeyondFourGiBSurviveOn32BitTargets) {
  // Runs on armhf and mipsel too (tools/cross-test): nothing may pass through a 32-bit size_t.
  ByteRange r;
  ASSERT_TRUE(parseContentRange("bytes 5000000000-5000000999/6000000000", &r));
  EXPECT_EQ(r.begin, 5000000000ull);
  EXPECT_EQ(r.end, 5000001000ull);
  EXPECT_EQ(r.total, 6000000000ull);
  EXPECT_EQ(r.size(), 1000u);
}

TEST(ContentRange, UnitIsCaseInsensitiveAndSpacesAreTrimmed) {
  ByteRange r;
  ASSERT_TRUE(parseContentRange("  Bytes 10-19/100 ", &r));
  EXPECT_EQ(r.begin, 10u);
  EXPECT_EQ(r.end, 20u);
  ASSERT_TRUE(parseContentRange("BYTES 99-99/100", &r));
  EXPECT_EQ(r.size(), 1u);
}

TEST(ContentRange, ZeroByteUploadForms) {
  ByteRange r{1, 2, 3};
  ASSERT_TRUE(parseContentRange("bytes 0--1/0", &r));
  EXPECT_EQ(r.begin, 0u);
  EXPECT_EQ(r.end, 0u);
  EXPECT_EQ(r.total, 0u);
  ASSERT_TRUE(parseContentRange("bytes */0", &r));
  EXPECT_EQ(r.total, 0u);
  EXPECT_FALSE(parseContentRange("bytes */5", &r));
  EXPECT_FALSE(parseContentRange("bytes 0--1/5", &r));
}

class BadContentRange : public ::testing::TestWithParam<const char*> {};

TEST_P(BadContentRange, IsRejected) {
  ByteRange r;
  EXPECT_FALSE(parseContentRange(GetParam(), &r)) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, BadContentRange,
    ::testing::Values("", "bytes", "bytes ", "bytes 0-9", "bytes 0-9/", "bytes 5-4/10", "bytes 0-10/10",
                      "bytes -1-5/10", "bytes 0-5/-10", "bytes 0 - 5/10", "bits 0-5/10", "bytes0-5/10",
                      "bytes 0-5/10x", "bytes 0x0-5/10", "bytes 0-18446744073709551616/18446744073709551617",
                      "bytes 1-2/3/4", "bytes */", "bytes a-b/c"));

TEST(ParseDecimal, RejectsOverflowAndSigns) {
  uint64_t v;
  EXPECT_TRUE(parseDecimal("18446744073709551615", &v));
  EXPECT_EQ(v, UINT64_MAX);
  EXPECT_FALSE(parseDecimal("18446744073709551616", &v));
  EXPECT_FALSE(parseDecimal("+1", &v));
  EXPECT_FALSE(parseDecimal("", &v));
  EXPECT_FALSE(parseDecimal("1 ", &v));
}

}  // namespace
}  // namespace bitsd
