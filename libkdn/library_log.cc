#include "libkdn/library_log.h"

#include <string>

#include "base/thread_annotations.h"

namespace kdn::libkdn {
namespace {

class CallbackLogger final : public Logger {
 public:
  void Set(kdn_log_fn fn, void* user) {
    MutexLock lock(mu_);
    fn_ = fn;
    user_ = user;
  }
  void Log(LogLevel level, std::string_view message) override {
    // The callback runs under the lock, so that once kdn_set_log_callback has returned the old
    // callback is never called again (its `user` may be freed right after).
    MutexLock lock(mu_);
    if (fn_ == nullptr) return;
    const std::string text(message);  // NUL-terminated for C
    fn_(user_, static_cast<kdn_log_level>(level), text.c_str());
  }

 private:
  Mutex mu_;
  kdn_log_fn fn_ KDN_GUARDED_BY(mu_) = nullptr;
  void* user_ KDN_GUARDED_BY(mu_) = nullptr;
};

CallbackLogger& Instance() {
  static CallbackLogger* logger = new CallbackLogger();  // never destroyed: used by late threads
  return *logger;
}

}  // namespace

void SetLogCallback(kdn_log_fn fn, void* user) {
  Instance().Set(fn, user);
}

Logger* LibraryLogger() {
  return &Instance();
}

}  // namespace kdn::libkdn
