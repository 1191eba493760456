// Logger: where the libraries' messages go (LevelDB's Options::info_log).
//
// No KDN library prints on its own: after kdnfs detaches from its terminal, stderr goes nowhere,
// and an engine embedding libkdn has its own log. A library that has something to say (an I/O
// engine falling back to pread/pwrite, a store finding a damaged extent at open) says it to the
// Logger its options carry; a null logger (the default everywhere) discards. Executables choose
// the destination: kdnfs routes messages to its daemon log (stderr or syslog), kdnctl to stderr,
// an engine to a callback (kdn_set_log_callback in kdn.h).
//
// RateLimitedLogger bounds what a flood of errors (a failing disk answering every request with
// EIO) can cost: at most `burst` messages per interval, then one line saying how many were
// dropped.
#ifndef KDN_LOGGER_H_
#define KDN_LOGGER_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace kdn {

// Most severe first: a logger that keeps messages up to a level keeps everything before it.
enum class LogLevel : uint8_t { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

inline std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError: return "error";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kInfo: return "info";
    case LogLevel::kDebug: return "debug";
  }
  return "info";
}

class Logger {
 public:
  virtual ~Logger() = default;
  // Called from any thread of the library, concurrently: implementations are thread-safe. The
  // message is one line without its newline.
  virtual void Log(LogLevel level, std::string_view message) = 0;
};

// Logs to `logger`, or nowhere when it is null (the libraries' default).
inline void Log(Logger* logger, LogLevel level, std::string_view message) {
  if (logger != nullptr) logger->Log(level, message);
}
inline void Log(const std::shared_ptr<Logger>& logger, LogLevel level, std::string_view message) {
  Log(logger.get(), level, message);
}

// "<prefix>: <level>: message" on stderr, up to `max_level`. For executables to install; a
// library never makes one.
class StderrLogger : public Logger {
 public:
  explicit StderrLogger(std::string prefix, LogLevel max_level = LogLevel::kInfo)
      : prefix_(std::move(prefix)), max_level_(max_level) {}
  void Log(LogLevel level, std::string_view message) override {
    if (level > max_level_) return;
    // One call per line: lines of concurrent threads do not interleave.
    std::fprintf(stderr, "%s: %.*s: %.*s\n", prefix_.c_str(),
                 static_cast<int>(LogLevelName(level).size()), LogLevelName(level).data(),
                 static_cast<int>(message.size()), message.data());
  }

 private:
  std::string prefix_;
  LogLevel max_level_;
};

// Passes at most `burst` messages per `interval` to `target` and drops the rest; the first message
// let through after a drop is preceded by a warning that says how many were dropped. The clock is
// a parameter so that tests can step it (steady_clock in ns by default).
class RateLimitedLogger : public Logger {
 public:
  using Clock = std::function<int64_t()>;  // nanoseconds, monotonic

  RateLimitedLogger(std::shared_ptr<Logger> target, uint32_t burst,
                    std::chrono::nanoseconds interval, Clock clock = nullptr)
      : target_(std::move(target)),
        burst_(burst),
        interval_ns_(interval.count()),
        clock_(clock ? std::move(clock) : Clock(&SteadyNanos)) {}

  void Log(LogLevel level, std::string_view message) override {
    uint64_t dropped = 0;
    {
      std::lock_guard lock(mu_);
      const int64_t now = clock_();
      if (!started_ || now - window_start_ >= interval_ns_) {
        started_ = true;
        window_start_ = now;
        in_window_ = 0;
      }
      if (in_window_ >= burst_) {
        ++suppressed_total_;
        ++suppressed_pending_;
        return;
      }
      ++in_window_;
      dropped = std::exchange(suppressed_pending_, 0);
    }
    if (target_ == nullptr) return;
    if (dropped > 0) {
      target_->Log(LogLevel::kWarning,
                   std::to_string(dropped) + " messages dropped by the rate limit");
    }
    target_->Log(level, message);
  }

  // Messages dropped since construction.
  uint64_t suppressed() const {
    std::lock_guard lock(mu_);
    return suppressed_total_;
  }

 private:
  static int64_t SteadyNanos() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  const std::shared_ptr<Logger> target_;
  const uint32_t burst_;
  const int64_t interval_ns_;
  const Clock clock_;
  mutable std::mutex mu_;
  bool started_ = false;
  int64_t window_start_ = 0;
  uint32_t in_window_ = 0;
  uint64_t suppressed_pending_ = 0;
  uint64_t suppressed_total_ = 0;
};

}  // namespace kdn

#endif  // KDN_LOGGER_H_
