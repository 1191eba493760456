// A kdn_ctx: the device it works on, its worker threads, its staging pool and its backend.
//
// Shared by the handle and by every cache opened through it, so that destroying the handle while
// caches are open is safe: the context goes when the last of them does. Work running on the
// workers never holds a reference (a context must not be destroyed on its own worker).
#ifndef KDN_LIBKDN_CONTEXT_H_
#define KDN_LIBKDN_CONTEXT_H_

#include <memory>

#include "libkdn/backend.h"
#include "libkdn/staging_pool.h"
#include "libkdn/worker_pool.h"
#include "kdn/status.h"

namespace kdn::libkdn {

class Context {
 public:
  // device -1: CPU backend; >= 0: that CUDA device (Unsupported when this build has no CUDA,
  // NotFound when there is no such device).
  static Result<std::shared_ptr<Context>> Create(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  WorkerPool& pool() { return *pool_; }
  StagingPool& staging() { return *staging_; }
  Backend& backend() { return *backend_; }

 private:
  explicit Context(int device) : device_(device) {}
  const int device_;
  std::shared_ptr<StagingPool> staging_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<WorkerPool> pool_;  // destroyed first: its tasks use the backend
};

// Idle staging memory a context keeps for reuse.
inline constexpr size_t kStagingKeepBytes = size_t{1} << 30;

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CONTEXT_H_
