// The daemon's log: stderr, and syslog once the daemon has detached from its terminal. The
// libraries kdnfs uses (store, I/O engine) log here too, through DaemonLogger().
#ifndef KDN_FS_KDNFS_LOG_H_
#define KDN_FS_KDNFS_LOG_H_

#include <memory>

#include "kdn/logger.h"

namespace kdn::fs {

using LogLevel = ::kdn::LogLevel;

// Sends later messages to syslog (ident "kdnfs") instead of stderr.
void LogToSyslog();
// Messages above `level` are dropped (kInfo by default; -d raises it to kDebug).
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

void Logf(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

// A kdn::Logger writing to this log, rate limited (a failing disk must not flood syslog): what
// kdnfs passes to the libraries (StoreOptions::info_log). One per process.
std::shared_ptr<Logger> DaemonLogger();

}  // namespace kdn::fs

#define KDN_LOG_ERROR(...) ::kdn::fs::Logf(::kdn::fs::LogLevel::kError, __VA_ARGS__)
#define KDN_LOG_WARNING(...) ::kdn::fs::Logf(::kdn::fs::LogLevel::kWarning, __VA_ARGS__)
#define KDN_LOG_INFO(...) ::kdn::fs::Logf(::kdn::fs::LogLevel::kInfo, __VA_ARGS__)
#define KDN_LOG_DEBUG(...)                                       \
  do {                                                           \
    if (::kdn::fs::LogEnabled(::kdn::fs::LogLevel::kDebug))      \
      ::kdn::fs::Logf(::kdn::fs::LogLevel::kDebug, __VA_ARGS__); \
  } while (0)

#endif  // KDN_FS_KDNFS_LOG_H_
