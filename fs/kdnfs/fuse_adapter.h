// The FUSE side of kdnfs: a libfuse low-level session whose requests become Filesystem calls.
#ifndef KDN_FS_KDNFS_FUSE_ADAPTER_H_
#define KDN_FS_KDNFS_FUSE_ADAPTER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/thread_annotations.h"
#include "fs/kdnfs/filesystem.h"
#include "fs/kdnfs/passthrough.h"
#include "kdn/status.h"

struct fuse_session;

namespace kdn::fs {

struct FuseOptions {
  // Options for libfuse and the kernel ("allow_other", "ro", "fsname=...", "debug"): each one is
  // passed as "-o <option>". kdnfs adds default_permissions and its size limits itself.
  std::vector<std::string> fuse_options;
  // Kernel readahead for the mount (bdi read_ahead_kb): with 1 MiB requests, how many READs the
  // kernel keeps in flight for a sequential reader.
  uint64_t readahead_bytes = uint64_t{16} << 20;
  unsigned max_threads = 64;  // worker threads serving requests
  // How long the receiving thread keeps polling /dev/fuse after a request before it sleeps
  // (see session_loop.h): a close's FLUSH then needs no wakeup of the daemon.
  std::chrono::microseconds spin{50};
  // Mounted read-only ("ro" among fuse_options): nothing is ever written, so FLUSH answers ENOSYS
  // and the kernel stops sending it. A close then costs no round trip (see fuse_adapter.cc).
  bool read_only = false;
  // Serve requests from per-CPU io_uring queues when the kernel offers them (fuse_uring.h).
  bool io_uring = true;
  // Request threads run SCHED_BATCH, which the scheduler never lets preempt the running task
  // when a request wakes them (-o sched=batch, the default). Why: a close() queues its RELEASE
  // and returns, and the queue thread of that CPU, woken, took the CPU from the client at once,
  // and gave it back after the RELEASE: two context switches per close. As a batch thread it
  // waits, and takes the RELEASE together with the client's next request, when the client
  // sleeps for it (a synchronous request's caller always does). Measured on the 2-vCPU VM:
  // open+read+close of small files 15-30% faster (tests/bench/groups/fs). The cost: on a CPU
  // kept busy by another task, a request waits for that task's time slice (milliseconds)
  // instead of preempting it; -o sched=normal when that matters more.
  bool batch_scheduling = true;
  // Let the kernel read committed files from their chunk files (passthrough.h) when it can.
  bool passthrough = true;
};

class FuseAdapter : public KernelCache {
 public:
  // A session over `fs`, not mounted yet. `fs` must outlive the adapter.
  static Result<std::unique_ptr<FuseAdapter>> Create(Filesystem* fs, const FuseOptions& options);
  ~FuseAdapter() override;

  Status Mount(const std::string& mountpoint);
  // Serves requests until the filesystem is unmounted or SIGINT/SIGTERM/SIGHUP arrives, then
  // unmounts. Returns OK on a clean exit.
  Status Run();

  // KernelCache
  void ForgetName(Ino parent, const std::string& name, Ino ino) override;
  void InvalidateInode(Ino ino, bool data) override;

  Filesystem* filesystem() { return fs_; }
  // Set by the init handler: whether the kernel knows no-open mode (OPEN answered ENOSYS).
  void set_no_open(bool no_open) { no_open_ = no_open; }
  bool no_open() const { return no_open_; }
  bool read_only() const { return options_.read_only; }
  Passthrough& passthrough() { return *passthrough_; }
  // Called by the init handler once the kernel has agreed on the connection's parameters.
  void Initialized();

 private:
  FuseAdapter(Filesystem* fs, const FuseOptions& options) : fs_(fs), options_(options) {}
  void NotifierLoop();
  void SweeperLoop();
  void TuneReadahead();

  Filesystem* fs_;
  FuseOptions options_;
  std::unique_ptr<Passthrough> passthrough_;
  fuse_session* session_ = nullptr;
  std::string mountpoint_;
  bool mounted_ = false;
  bool no_open_ = false;

  Mutex mu_;
  std::condition_variable_any cv_;
  bool stopping_ KDN_GUARDED_BY(mu_) = false;
  bool initialized_ KDN_GUARDED_BY(mu_) = false;
  struct Forgotten {
    Ino parent;
    std::string name;
    Ino ino;
  };
  std::deque<Forgotten> forgotten_ KDN_GUARDED_BY(mu_);
  std::thread notifier_;
  std::thread sweeper_;
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_FUSE_ADAPTER_H_
