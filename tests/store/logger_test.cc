// Logging: the libraries say what they have to say to the logger their options carry (never to
// stderr), and a rate-limited logger bounds a flood.
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "iouring/io_engine.h"
#include "kdn/logger.h"
#include "store_test_util.h"

namespace kdn::test {
namespace {

class CapturingLogger : public Logger {
 public:
  void Log(LogLevel level, std::string_view message) override {
    std::lock_guard lock(mu);
    lines.emplace_back(level, std::string(message));
  }
  bool Saw(std::string_view needle) {
    std::lock_guard lock(mu);
    for (const auto& [level, text] : lines)
      if (text.find(needle) != std::string::npos) return true;
    return false;
  }
  std::mutex mu;
  std::vector<std::pair<LogLevel, std::string>> lines;
};

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_.empty()) ::unsetenv(name_);
    else ::setenv(name_, old_.c_str(), 1);
  }

 private:
  const char* name_;
  std::string old_;
};

TEST(Logger, IoEngineWarningReachesTheInstalledLoggerNotStderr) {
  ScopedEnv env("KDN_IO_ENGINE", "bogus");
  auto logger = std::make_shared<CapturingLogger>();
  io::EngineOptions o;
  o.logger = logger;
  testing::internal::CaptureStderr();
  auto engine = io::CreateIoEngine(o);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  EXPECT_TRUE(logger->Saw("ignoring KDN_IO_ENGINE=bogus"));
  EXPECT_EQ(logger->lines.at(0).first, LogLevel::kWarning);
}

TEST(Logger, StoreOptionsCarryTheLoggerToTheIoEngine) {
  ScopedEnv env("KDN_IO_ENGINE", "bogus");
  TempDir dir;
  auto logger = std::make_shared<CapturingLogger>();
  StoreOptions o = SmallStoreOptions();
  o.info_log = logger;
  testing::internal::CaptureStderr();
  { auto store = OpenStore(dir.str() + "/s", o); }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(logger->Saw("ignoring KDN_IO_ENGINE=bogus"));
}

TEST(Logger, WithoutALoggerNothingIsPrinted) {
  ScopedEnv env("KDN_IO_ENGINE", "bogus");
  TempDir dir;
  testing::internal::CaptureStderr();
  { auto store = OpenStore(dir.str() + "/s", SmallStoreOptions()); }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(Logger, RateLimitDropsTheExcessAndSaysHowMany) {
  auto target = std::make_shared<CapturingLogger>();
  int64_t now = 1000;
  RateLimitedLogger limited(target, 3, std::chrono::seconds(1), [&now] { return now; });
  for (int i = 0; i < 10; ++i) limited.Log(LogLevel::kError, "failure " + std::to_string(i));
  ASSERT_EQ(target->lines.size(), 3u);
  EXPECT_EQ(target->lines[2].second, "failure 2");
  EXPECT_EQ(limited.suppressed(), 7u);
  // Still inside the window: dropped too.
  now += 999'999'999;
  limited.Log(LogLevel::kError, "late");
  EXPECT_EQ(target->lines.size(), 3u);
  EXPECT_EQ(limited.suppressed(), 8u);
  // A new window: the count of dropped lines first, then the message.
  now += 1;
  limited.Log(LogLevel::kInfo, "again");
  ASSERT_EQ(target->lines.size(), 5u);
  EXPECT_EQ(target->lines[3].first, LogLevel::kWarning);
  EXPECT_EQ(target->lines[3].second, "8 messages dropped by the rate limit");
  EXPECT_EQ(target->lines[4], std::make_pair(LogLevel::kInfo, std::string("again")));
}

}  // namespace
}  // namespace kdn::test
