// FUSE over io_uring (Linux 6.14 and later): requests arrive on one queue per CPU instead of
// through read(2) and write(2) on /dev/fuse.
//
// Why: the kernel puts a request on the queue of the CPU its caller runs on, and kdnfs serves
// each queue from a thread pinned to that CPU. A client's request then wakes a thread on its own
// CPU, and the answer wakes the client there too: no wakeup crosses CPUs, which is what a
// round trip costs most on a VM (a halted vCPU woken by an interrupt). On /dev/fuse the reply to
// a close() of a cached file wakes the client from another CPU every time.
//
// How, with libfuse 3.14 (which predates io_uring): kdnfs installs its own read and writev
// functions on the session (fuse_session_custom_io). The read function notes whether the
// kernel's INIT offers io_uring; the writev function adds FUSE_OVER_IO_URING to the INIT reply,
// after it has created the rings and buffers (a kernel told "io_uring" holds every request until
// all queues are registered, so nothing may fail after that promise), and then the queue threads
// register their entries. A request from a queue is laid out as /dev/fuse would deliver it
// (header, op struct, payload: the payload stays where the kernel wrote it) and given to libfuse;
// libfuse's reply comes back through writev, which recognises the request by its unique id and
// commits the answer on the request's queue. Everything else (INIT, FORGET, INTERRUPT,
// notifications) stays on /dev/fuse.
//
// The cost: a reply is copied into its entry's payload buffer before the kernel copies it out, one
// copy more than writev(2) to /dev/fuse, and requests other than a quick FLUSH take one more
// wakeup (queue thread -> worker -> queue thread). What that costs, measured, is in README.md.
//
// The kernel offers io_uring only when the fuse module allows it
// (/sys/module/fuse/parameters/enable_uring = Y, off by default); otherwise nothing changes.
//
// The same read and writev functions let kdnfs add what else libfuse 3.14 cannot say to the INIT
// reply (Hooks::patch_init: FUSE passthrough, passthrough.h), with or without io_uring.
#ifndef KDN_FS_KDNFS_FUSE_URING_H_
#define KDN_FS_KDNFS_FUSE_URING_H_

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kdn/status.h"

struct fuse_session;
struct fuse_in_header;
struct fuse_init_out;

namespace kdn::fs {

class FuseUring {
 public:
  struct Hooks {
    // Whether the queue's own thread answers this request (it must not wait for the disk).
    // `args`: the operation's arguments that follow the header (header.len bytes in all).
    std::function<bool(const fuse_in_header& header, const void* args)> answers_inline;
    // Any other request goes to the worker pool: `mem` holds `size` bytes in /dev/fuse's format
    // and stays valid until the request is answered.
    std::function<void(void* mem, size_t size)> enqueue;
    // The queues failed after the kernel was promised io_uring: the session cannot go on.
    std::function<void(int error)> fail;
    // Take io_uring when the kernel offers it. Off, only the INIT reply is patched (below).
    bool io_uring = true;
    // Called first by each queue thread, once pinned to its CPU (SessionLoop's scheduling
    // policy). Optional.
    void (*thread_start)() = nullptr;
    // Before the INIT reply is written: the flags the kernel offered (flags | flags2 << 32) and
    // the reply libfuse made, to add what libfuse does not know (FUSE_PASSTHROUGH). Optional.
    std::function<void(uint64_t offered, fuse_init_out& reply)> patch_init;
  };

  // Installs kdnfs's I/O functions on `session` (mounted, not yet initialised). Only one
  // FuseUring may exist per process (libfuse's I/O functions carry no pointer of ours).
  static Result<std::unique_ptr<FuseUring>> Install(fuse_session* session, Hooks hooks);
  // Stops the queue threads. Requests still queued in the kernel end with the connection.
  ~FuseUring();

  // Whether the kernel accepted io_uring for this connection.
  bool active() const { return active_.load(); }
  uint64_t requests() const { return requests_.load(); }

 private:
  struct Entry;
  struct Queue;

  FuseUring(fuse_session* session, int fd, Hooks hooks);
  static ssize_t ReadHook(int fd, void* buf, size_t len, void* userdata);
  static ssize_t WritevHook(int fd, struct iovec* iov, int count, void* userdata);

  ssize_t WriteInitReply(int fd, const struct iovec* iov, int count);
  // Creates a queue per possible CPU with rings and buffers for `payload_bytes` requests.
  Status CreateQueues(size_t payload_bytes);
  // Queues `cmd` (register, or commit the answer and fetch the next request) for `entry` on
  // its queue's ring; only the queue's own thread calls it, and submits.
  void Submit(Queue* queue, Entry* entry, uint32_t cmd);
  void QueueThread(Queue* queue);
  void Serve(Queue* queue, Entry* entry);
  // Commits libfuse's reply to `entry`'s request.
  ssize_t Reply(Entry* entry, const struct iovec* iov, int count);
  Entry* FindInFlight(uint64_t unique);
  void Stop();

  // The queue whose thread is running: its replies go straight into its own ring.
  static thread_local Queue* t_queue_;

  fuse_session* const session_;
  const int fd_;  // /dev/fuse
  const Hooks hooks_;
  std::atomic<uint64_t> init_unique_{0};  // INIT's id until its reply is written
  uint64_t init_offered_ = 0;             // what that INIT offers (flags | flags2 << 32)
  std::atomic<bool> active_{false};
  std::atomic<uint64_t> requests_{0};
  size_t payload_bytes_ = 0;
  std::vector<std::unique_ptr<Queue>> queues_;
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_FUSE_URING_H_
