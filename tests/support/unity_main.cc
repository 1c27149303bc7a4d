// GoogleTest main that also prints a Unity-style closing summary, which board test rigs read:
//   -----------------------
//   N Tests M Failures K Ignored
//   OK | FAIL
#include <gtest/gtest.h>

#include <cstdio>

namespace {
class UnitySummary : public testing::EmptyTestEventListener {
  void OnTestProgramEnd(const testing::UnitTest& unit) override {
    int total = 0, failed = 0, ignored = 0;
    for (int i = 0; i < unit.total_test_suite_count(); ++i) {
      const testing::TestSuite* suite = unit.GetTestSuite(i);
      for (int j = 0; j < suite->total_test_count(); ++j) {
        const testing::TestInfo* t = suite->GetTestInfo(j);
        if (!t->should_run()) continue;
        ++total;
        if (t->result()->Skipped()) {
          ++ignored;
        } else if (t->result()->Failed()) {
          ++failed;
        }
      }
    }
    std::printf("\n-----------------------\n%d Tests %d Failures %d Ignored\n%s\n", total, failed, ignored,
                failed == 0 ? "OK" : "FAIL");
    std::fflush(stdout);
  }
};
}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  testing::UnitTest::GetInstance()->listeners().Append(new UnitySummary);
  return RUN_ALL_TESTS();
}
