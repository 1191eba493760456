#include "fs/kdnfs/log.h"

#include <syslog.h>

#include <atomic>
#include <cstdarg>
#include <chrono>
#include <cstdio>
#include <string_view>

namespace kdn::fs {
namespace {

std::atomic<bool> g_syslog{false};
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

int SyslogPriority(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return LOG_ERR;
    case LogLevel::kWarning:
      return LOG_WARNING;
    case LogLevel::kInfo:
      return LOG_INFO;
    case LogLevel::kDebug:
      return LOG_DEBUG;
  }
  return LOG_INFO;
}

// Writes to the daemon's log what the libraries say.
class LogfLogger final : public Logger {
 public:
  void Log(LogLevel level, std::string_view message) override {
    Logf(level, "%.*s", static_cast<int>(message.size()), message.data());
  }
};

}  // namespace

void LogToSyslog() {
  openlog("kdnfs", LOG_PID, LOG_DAEMON);
  g_syslog = true;
}

void SetLogLevel(LogLevel level) {
  g_level = static_cast<int>(level);
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) <= g_level.load();
}

void Logf(LogLevel level, const char* format, ...) {
  if (!LogEnabled(level)) return;
  char message[2048];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  if (g_syslog) {
    syslog(SyslogPriority(level), "%s", message);
  } else {
    // One fprintf per message: lines from several threads do not interleave.
    fprintf(stderr, "kdnfs: %s: %s\n", LogLevelName(level).data(), message);
  }
}

std::shared_ptr<Logger> DaemonLogger() {
  // 100 lines per 10 s: enough for any burst a person reads, bounded for a failing disk.
  static const std::shared_ptr<Logger> logger = std::make_shared<RateLimitedLogger>(
      std::make_shared<LogfLogger>(), 100, std::chrono::seconds(10));
  return logger;
}

}  // namespace kdn::fs
