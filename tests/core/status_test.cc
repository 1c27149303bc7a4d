// Outcome (core/status.h): start-up's error value, a Status whose one-line message is composed at
// run time.
#include "core/status.h"

#include <gtest/gtest.h>

namespace bitsd::testing {
namespace {

TEST(Outcome, AStatusTravelsUnchanged) {
  Outcome o = Status(Code::Exhausted, "journal buffer full");
  EXPECT_FALSE(o.isOk());
  EXPECT_EQ(o.code(), Code::Exhausted);
  EXPECT_EQ(o.message(), "journal buffer full");
  Outcome fine = Status::ok();
  EXPECT_TRUE(fine.isOk());
  EXPECT_EQ(fine.message(), "");
}

TEST(Outcome, AFailureIsNeverOk) {
  Outcome o = Outcome::fail(Code::Ok, "cannot seed the random generator");
  EXPECT_FALSE(o.isOk()) << "a failure made with Code::Ok must not read as success";
  EXPECT_EQ(o.code(), Code::Io);
}

TEST(Outcome, WithinNamesTheContext) {
  Outcome o = Outcome::fail(Code::NotFound, "cannot resolve /srv/x: No such file or directory");
  Outcome named = o.within("locations: /x -> /srv/x: ");
  EXPECT_EQ(named.code(), Code::NotFound);
  EXPECT_EQ(named.message(), "locations: /x -> /srv/x: cannot resolve /srv/x: No such file or directory");
  EXPECT_TRUE(Outcome::ok().within("journal: ").isOk());
  EXPECT_EQ(Outcome::ok().within("journal: ").message(), "");
}

}  // namespace
}  // namespace bitsd::testing
