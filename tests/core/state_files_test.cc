// The names of the state directory's files (core/state_files.h): written and recognised by the same
// functions, and nothing else recognised as bitsd's.
#include <gtest/gtest.h>

#include "core/state_files.h"

namespace bitsd {
namespace {

SessionId someId() {
  SessionId id;
  EXPECT_TRUE(parseSessionId("{01234567-89AB-4CDE-8F01-23456789ABCD}", &id));
  return id;
}

TEST(StateFiles, DirectoriesIgnoreTrailingSlashes) {
  EXPECT_EQ(partialDirOf("/var/lib/bitsd"), "/var/lib/bitsd/partial");
  EXPECT_EQ(partialDirOf("/var/lib/bitsd//"), "/var/lib/bitsd/partial");
  EXPECT_EQ(repliesDirOf("/s/"), "/s/replies");
}

TEST(StateFiles, PartialAndReplyNamesRoundTrip) {
  const SessionId id = someId();
  char path[128];
  size_t n = formatPartialPath("/s/partial", id, path);
  EXPECT_EQ(std::string(path, n), "/s/partial/{01234567-89AB-4CDE-8F01-23456789ABCD}.part");
  EXPECT_EQ(path[n], '\0');
  SessionId back;
  ASSERT_TRUE(parsePartialName(std::string_view(path + 11, n - 11), &back));
  EXPECT_TRUE(back == id);
  n = formatReplyPath("/s/replies", id, path);
  EXPECT_EQ(std::string(path, n), "/s/replies/{01234567-89AB-4CDE-8F01-23456789ABCD}");
  ASSERT_TRUE(parseReplyName(std::string_view(path + 11, n - 11), &back));
  EXPECT_TRUE(back == id);
  char name[kPartialNameBytes];
  formatPartialName(id, name);
  EXPECT_EQ(std::string(name, sizeof name), "{01234567-89AB-4CDE-8F01-23456789ABCD}.part");
}

TEST(StateFiles, StraysAreNotRecognised) {
  SessionId id;
  EXPECT_FALSE(parsePartialName("{01234567-89AB-4CDE-8F01-23456789ABCD}", &id));
  EXPECT_FALSE(parsePartialName("{01234567-89AB-4CDE-8F01-23456789ABCD}.part.tmp", &id));
  EXPECT_FALSE(parsePartialName("{01234567-89AB-4CDE-8F01-23456789ABCD}.prt", &id));
  EXPECT_FALSE(parsePartialName("x.part", &id));
  EXPECT_FALSE(parseReplyName("{01234567-89AB-4CDE-8F01-23456789ABCD}.part", &id));
  EXPECT_FALSE(parseReplyName("journal", &id));
}

TEST(StateFiles, RepliesAreKeptOnlyForHandedOffCompleteSessions) {
  Session s;
  s.state = SessionState::Complete;
  EXPECT_FALSE(keepsReply(s));
  s.handedOff = true;
  EXPECT_TRUE(keepsReply(s));
  s.state = SessionState::Closed;
  EXPECT_FALSE(keepsReply(s));
  EXPECT_EQ(deliveredRetentionSeconds(0, 3600), 3600u);
  EXPECT_EQ(deliveredRetentionSeconds(60, 3600), 60u);
}

}  // namespace
}  // namespace bitsd
