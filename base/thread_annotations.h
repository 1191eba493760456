// Thread-safety annotations (Clang's -Wthread-safety) and the annotated Mutex they need.
//
// Which lock guards which member, and which functions expect a lock held, is written in the code
// where the compiler can check it, instead of in comments: a member declared
//   std::vector<Item> queue_ KDN_GUARDED_BY(mu_);
// is an error to touch without holding mu_ when built with clang and -Wthread-safety (CI does,
// with -DKDN_THREAD_SAFETY=ON). Other compilers see nothing.
//
// Mutex wraps std::mutex with the capability attribute (libstdc++'s std::mutex has none), and
// MutexLock / UniqueLock are its scoped holders. A condition variable waits with
// std::condition_variable_any on a UniqueLock. A lambda run under a lock (a wait predicate)
// says so with KDN_REQUIRES, because the analysis checks each function on its own.
// Header only: every layer may use it without depending on another.
#ifndef KDN_BASE_THREAD_ANNOTATIONS_H_
#define KDN_BASE_THREAD_ANNOTATIONS_H_

#include <mutex>

#if defined(__clang__)
#define KDN_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define KDN_THREAD_ANNOTATION_(x)
#endif

#define KDN_CAPABILITY(name) KDN_THREAD_ANNOTATION_(capability(name))
#define KDN_SCOPED_CAPABILITY KDN_THREAD_ANNOTATION_(scoped_lockable)
#define KDN_GUARDED_BY(mu) KDN_THREAD_ANNOTATION_(guarded_by(mu))
#define KDN_PT_GUARDED_BY(mu) KDN_THREAD_ANNOTATION_(pt_guarded_by(mu))
#define KDN_ACQUIRED_AFTER(...) KDN_THREAD_ANNOTATION_(acquired_after(__VA_ARGS__))
#define KDN_ACQUIRED_BEFORE(...) KDN_THREAD_ANNOTATION_(acquired_before(__VA_ARGS__))
#define KDN_REQUIRES(...) KDN_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define KDN_ACQUIRE(...) KDN_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define KDN_RELEASE(...) KDN_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define KDN_TRY_ACQUIRE(...) KDN_THREAD_ANNOTATION_(try_acquire_capability(__VA_ARGS__))
#define KDN_EXCLUDES(...) KDN_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
#define KDN_RETURN_CAPABILITY(x) KDN_THREAD_ANNOTATION_(lock_returned(x))
#define KDN_NO_THREAD_SAFETY_ANALYSIS KDN_THREAD_ANNOTATION_(no_thread_safety_analysis)

namespace kdn {

class KDN_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() KDN_ACQUIRE() { mu_.lock(); }
  void unlock() KDN_RELEASE() { mu_.unlock(); }
  bool try_lock() KDN_TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope (std::lock_guard).
class KDN_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) KDN_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() KDN_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// Holds a Mutex for its scope, with unlock() and lock() in between (std::unique_lock); what
// std::condition_variable_any waits with.
class KDN_SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mu) KDN_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~UniqueLock() KDN_RELEASE() {
    if (held_) mu_.unlock();
  }
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() KDN_ACQUIRE() {
    mu_.lock();
    held_ = true;
  }
  void unlock() KDN_RELEASE() {
    held_ = false;
    mu_.unlock();
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

}  // namespace kdn

#endif  // KDN_BASE_THREAD_ANNOTATIONS_H_
