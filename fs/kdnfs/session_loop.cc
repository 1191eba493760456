// kdnfs's FUSE request loop (see session_loop.h): a receiver that answers quick requests itself
// and hands slow ones to a pool, over libfuse's public session API.
#define FUSE_USE_VERSION 312
#include "fs/kdnfs/session_loop.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "fs/kdnfs/fuse_uring.h"
#include "fs/kdnfs/log.h"

namespace kdn::fs {
namespace {

// The loop of the calling thread and whether that thread is its receiver (BeforeBlocking).
thread_local SessionLoop* t_loop = nullptr;
thread_local bool t_receiving = false;

// What the signal handler needs: it may only store a number and write(2).
std::atomic<int> g_wake_fd{-1};
volatile sig_atomic_t g_signal = 0;

void OnSignal(int sig) {
  g_signal = sig;
  int fd = g_wake_fd.load();
  if (fd >= 0) {
    uint64_t one = 1;
    (void)!::write(fd, &one, sizeof(one));
  }
}

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};

}  // namespace

SessionLoop::SessionLoop(fuse_session* session, const Options& options)
    : session_(session), options_(options) {
  CPU_ZERO(&cpus_);
  if (::sched_getaffinity(0, sizeof(cpus_), &cpus_) != 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) CPU_SET(cpu, &cpus_);
  }
}

SessionLoop::~SessionLoop() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Result<int> SessionLoop::Run(fuse_session* session, const Options& options) {
  SessionLoop loop(session, options);
  return loop.Serve();
}

void SessionLoop::BeforeBlocking() {
  if (t_loop != nullptr && t_receiving) t_loop->HandOff();
}

Result<int> SessionLoop::Serve() {
  fd_ = fuse_session_fd(session_);
  int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) != 0) {
    return Status::FromErrno("cannot make /dev/fuse non-blocking", errno);
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return Status::FromErrno("eventfd", errno);

  g_signal = 0;
  g_wake_fd.store(wake_fd_);
  struct sigaction old_actions[3];
  struct sigaction old_pipe;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &old_actions[i]);
  sa.sa_handler = SIG_IGN;  // a reply to a client that went away must not kill the daemon
  ::sigaction(SIGPIPE, &sa, &old_pipe);

  // Installed before the first request (INIT) is read: INIT is where io_uring (and what
  // patch_init adds) is agreed on.
  std::unique_ptr<FuseUring> uring;
  if (options_.io_uring || options_.patch_init) {
    FuseUring::Hooks hooks;
    hooks.answers_inline = options_.answers_inline;
    hooks.enqueue = [this](void* mem, size_t size) { Enqueue(mem, size); };
    hooks.fail = [this](int error) { End(error); };
    hooks.io_uring = options_.io_uring;
    if (options_.batch_scheduling) hooks.thread_start = &UseBatchScheduling;
    hooks.patch_init = options_.patch_init;
    auto installed = FuseUring::Install(session_, std::move(hooks));
    if (installed.ok()) {
      uring = std::move(*installed);
    } else {
      KDN_LOG_INFO("kdnfs's FUSE I/O functions (io_uring, passthrough) not used: %s",
                   installed.status().ToString().c_str());
    }
  }
  {
    MutexLock lock(mu_);
    StartThreadLocked();
  }
  // Until a signal, an unmount or an error makes wake_fd_ readable.
  for (;;) {
    pollfd p = {wake_fd_, POLLIN, 0};
    if (::poll(&p, 1, -1) == 1) break;
  }
  std::vector<std::thread> threads;
  {
    MutexLock lock(mu_);
    ending_ = true;
    threads.swap(threads_);  // no thread starts once ending_ is set
  }
  cv_.notify_all();
  for (auto& t : threads) t.join();
  // After the workers: their last answers go through the io_uring queues.
  uring.reset();
  int error;
  {
    MutexLock lock(mu_);  // no other thread is left; held for the analysis's sake
    for (void* mem : free_) std::free(mem);
    free_.clear();
    for (const Request& r : queue_) {  // left by an unmount: nobody to answer
      if (r.owned) std::free(r.mem);
    }
    queue_.clear();
    error = error_;
  }

  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &old_actions[i], nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  g_wake_fd.store(-1);
  ::fcntl(fd_, F_SETFL, flags);
  fuse_session_exit(session_);
  if (error != 0) return Status::FromErrno("reading /dev/fuse", error);
  return static_cast<int>(g_signal);
}

void SessionLoop::StartThreadLocked() {
  threads_.emplace_back([this] { Worker(); });
}

void SessionLoop::HandOff() {
  t_receiving = false;
  MutexLock lock(mu_);
  receiving_ = false;
  WakeOneLocked();
}

void SessionLoop::WakeOneLocked() {
  if (ending_) return;
  if (idle_ > 0) {
    cv_.notify_one();
  } else if (threads_.size() < options_.max_threads) {
    StartThreadLocked();
  }
  // Otherwise every thread is busy: the first to finish takes the work (libfuse's limit, too).
}

void SessionLoop::End(int error) {
  {
    MutexLock lock(mu_);
    if (error_ == 0) error_ = error;
  }
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
}

bool SessionLoop::Receive(fuse_buf& buf, std::chrono::steady_clock::time_point spin_until) {
  // Not spinning: poll(2) first, so that a request costs poll + read, not a read that finds
  // nothing, a poll and a read.
  bool spinning = std::chrono::steady_clock::now() < spin_until;
  for (;;) {
    if (!spinning) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      int r = ::poll(fds, 2, -1);
      if (r < 0 && errno != EINTR) {
        KDN_LOG_ERROR("poll /dev/fuse: %s", std::strerror(errno));
        End(errno);
        return false;
      }
      if (r > 0 && fds[1].revents != 0) return false;
    }
    int n = fuse_session_receive_buf(session_, &buf);
    if (n > 0) return true;
    if (n == 0 || fuse_session_exited(session_)) {  // unmounted (ENODEV) or ended
      End(0);
      return false;
    }
    if (n != -EINTR && n != -EAGAIN) {
      KDN_LOG_ERROR("reading /dev/fuse: %s", std::strerror(-n));
      End(-n);
      return false;
    }
    spinning = spinning && std::chrono::steady_clock::now() < spin_until;
    if (spinning) CpuRelax();
  }
}

void SessionLoop::UseBatchScheduling() {
  sched_param param;
  std::memset(&param, 0, sizeof(param));
  if (::sched_setscheduler(0, SCHED_BATCH, &param) != 0) {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      KDN_LOG_WARNING("request threads stay SCHED_OTHER: sched_setscheduler: %s",
                      std::strerror(errno));
    }
  }
}

void SessionLoop::Worker() {
  // An io_uring queue thread (pinned to its CPU) may have started this one.
  (void)::sched_setaffinity(0, sizeof(cpus_), &cpus_);
  if (options_.batch_scheduling) UseBatchScheduling();
  pthread_setname_np(pthread_self(), "kdnfs");
  t_loop = this;
  fuse_buf buf;  // this thread's receive buffer; libfuse allocates buf.mem on first use
  std::memset(&buf, 0, sizeof(buf));
  UniqueLock lock(mu_);
  for (;;) {
    ++idle_;
    while (!ending_ && queue_.empty() && receiving_) cv_.wait(lock);
    --idle_;
    if (!queue_.empty()) {
      Request r = queue_.front();
      queue_.pop_front();
      lock.unlock();
      fuse_buf work;
      std::memset(&work, 0, sizeof(work));
      work.mem = r.mem;
      work.size = r.size;
      fuse_session_process_buf(session_, &work);
      lock.lock();
      if (r.owned) free_.push_back(r.mem);
      continue;
    }
    if (ending_) break;
    receiving_ = true;
    lock.unlock();
    ReceiveLoop(buf);
    lock.lock();
  }
  lock.unlock();
  t_loop = nullptr;
  std::free(buf.mem);
}

void SessionLoop::Enqueue(void* mem, size_t size) {
  MutexLock lock(mu_);
  queue_.push_back(Request{mem, size, false});
  WakeOneLocked();
}

void SessionLoop::ReceiveLoop(fuse_buf& buf) {
  t_receiving = true;
  auto spin_until = std::chrono::steady_clock::time_point{};
  while (t_receiving) {
    if (!Receive(buf, spin_until)) {
      t_receiving = false;
      MutexLock lock(mu_);
      receiving_ = false;
      ending_ = true;
      cv_.notify_all();
      return;
    }
    bool quick = options_.answers_inline && buf.size >= sizeof(fuse_in_header) &&
                 options_.answers_inline(*static_cast<const fuse_in_header*>(buf.mem),
                                         static_cast<const std::byte*>(buf.mem) +
                                             sizeof(fuse_in_header));
    if (quick) {
      fuse_session_process_buf(session_, &buf);  // may hand receiving off (BeforeBlocking)
      // A client waited for that answer and may well send the next request at once (a loop of
      // open, read, close). After a queued request the receiver does not spin: it would take a
      // CPU from the threads doing the work (a cold read's READs).
      spin_until = std::chrono::steady_clock::now() + options_.spin;
    } else {
      // Queued with its buffer; the receiver goes on with a free one, so that requests that
      // arrive together (readahead READs) are picked up at once and processed in parallel.
      MutexLock lock(mu_);
      queue_.push_back(Request{buf.mem, buf.size, true});
      std::memset(&buf, 0, sizeof(buf));
      if (!free_.empty()) {
        buf.mem = free_.back();
        free_.pop_back();
      }
      WakeOneLocked();
      spin_until = std::chrono::steady_clock::time_point{};
    }
  }
}

}  // namespace kdn::fs
