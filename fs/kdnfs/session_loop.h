// kdnfs's FUSE request loop: one thread receives at a time, many may process.
//
// libfuse's multi-threaded loop keeps every idle worker blocked in read(2) on /dev/fuse, and the
// kernel wakes them in turn (first in, first woken), so each request of a single client lands on
// a different, cache-cold thread, often on another CPU. On the 2-vCPU VM kdnfs is measured on, a
// cross-CPU wakeup costs far more than the request itself. SessionLoop instead keeps exactly one
// thread receiving (the receiver); the others wait on a condition variable.
//
// - A request the receiver may answer at once (Options::answers_inline: it never waits for the
//   disk or the kernel) is answered by the receiver itself, which then receives the next one: a
//   single client's close() -> FLUSH round trips stay on one warm thread.
// - Any other request is queued, with its buffer, for an idle thread (started when none is idle,
//   up to Options::max_threads), and the receiver goes on receiving: requests that arrive
//   together (readahead READs) are processed in parallel, and one waiting for the kernel (a page
//   lock held by a READ in flight) never stops the loop.
// - A handler that finds out late that it must block (an inline FLUSH that has to commit) calls
//   BeforeBlocking(), which hands receiving off the same way.
// - After a request it answered itself, the receiver polls /dev/fuse without sleeping for
//   Options::spin, so that a client's next close needs no wakeup of the daemon (bounded: an idle
//   daemon sleeps in poll(2) and uses no CPU; no spinning after queued requests, whose threads
//   need the CPUs).
//
// SIGINT, SIGTERM and SIGHUP end the loop (after the requests being processed are answered), as
// does unmounting. Uses libfuse's public session API only.
#ifndef KDN_FS_KDNFS_SESSION_LOOP_H_
#define KDN_FS_KDNFS_SESSION_LOOP_H_

#include <sched.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/status.h"

struct fuse_session;
struct fuse_in_header;
struct fuse_init_out;
struct fuse_buf;

namespace kdn::fs {

class SessionLoop {
 public:
  struct Options {
    unsigned max_threads = 64;
    std::chrono::microseconds spin{0};
    // Whether the receiver answers this request itself (see above). Null: none. With
    // io_uring, the queue threads answer the same requests themselves.
    // `args`: the operation's arguments that follow the header (header.len bytes in all; their
    // alignment is not promised: copy them out).
    std::function<bool(const fuse_in_header& header, const void* args)> answers_inline;
    // Take requests from per-CPU io_uring queues when the kernel offers them (fuse_uring.h).
    bool io_uring = true;
    // Request threads (workers and io_uring queue threads) run SCHED_BATCH: a request never
    // preempts the task running on its CPU when it wakes one (FuseOptions::batch_scheduling).
    bool batch_scheduling = false;
    // Adds to the INIT reply what libfuse cannot (FuseUring::Hooks::patch_init). Optional.
    std::function<void(uint64_t offered, fuse_init_out& reply)> patch_init;
  };

  // Serves `session` (mounted) until it is unmounted or a signal ends it. Returns the signal that
  // ended it (0 for an unmount), or an error. Installs its own SIGINT/SIGTERM/SIGHUP handlers
  // for the duration and ignores SIGPIPE.
  static Result<int> Run(fuse_session* session, const Options& options);

  // Makes the calling thread SCHED_BATCH (see Options::batch_scheduling); logs once if the
  // kernel refuses.
  static void UseBatchScheduling();

  // From a request handler, before work that may wait for the disk or the kernel: when the
  // calling thread is the receiver, another thread takes over receiving. Otherwise a no-op.
  static void BeforeBlocking();

 private:
  SessionLoop(fuse_session* session, const Options& options);
  ~SessionLoop();
  Result<int> Serve();
  void Worker();
  // Waits for the next request into the thread's buffer. False when the loop ends.
  bool Receive(::fuse_buf& buf, std::chrono::steady_clock::time_point spin_until);
  // The calling thread stops receiving; an idle thread (or a new one) starts.
  void HandOff();
  // Wakes an idle thread, or starts one (up to max_threads).
  void WakeOneLocked() KDN_REQUIRES(mu_);
  void StartThreadLocked() KDN_REQUIRES(mu_);
  // The receiver's loop: until the thread hands receiving off or the loop ends.
  void ReceiveLoop(::fuse_buf& buf);
  // A request from an io_uring queue, for the pool.
  void Enqueue(void* mem, size_t size);
  void End(int error);

  fuse_session* const session_;
  const Options options_;
  int fd_ = -1;       // /dev/fuse, non-blocking
  int wake_fd_ = -1;  // eventfd: readable once the loop must end

  Mutex mu_;
  std::condition_variable_any cv_;
  bool receiving_ KDN_GUARDED_BY(mu_) = false;  // a thread is the receiver
  struct Request {
    void* mem;  // malloc'ed by libfuse, of the session's buffer size, or an io_uring entry's
    size_t size;
    bool owned;  // mem is the loop's (to reuse), not an io_uring entry's
  };
  std::deque<Request> queue_ KDN_GUARDED_BY(mu_);  // received, waiting for a thread
  std::vector<void*> free_ KDN_GUARDED_BY(mu_);    // buffers of processed requests, for the receiver
  bool ending_ KDN_GUARDED_BY(mu_) = false;
  unsigned idle_ KDN_GUARDED_BY(mu_) = 0;  // threads waiting for work or to become the receiver
  int error_ KDN_GUARDED_BY(mu_) = 0;  // errno that ended the loop, 0 when unmounted or signalled
  std::vector<std::thread> threads_ KDN_GUARDED_BY(mu_);
  cpu_set_t cpus_;  // the process's CPUs: a worker started by a pinned queue thread gets them back
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_SESSION_LOOP_H_
