#include "fs/kdnfs/log.h"

#include <syslog.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>

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

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "info";
}

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
    fprintf(stderr, "kdnfs: %s: %s\n", LevelName(level), message);
  }
}

}  // namespace kdn::fs
