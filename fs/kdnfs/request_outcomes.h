// The outcome of every FUSE request, in one place (as mountpoint-s3's fuse_error!).
//
// The adapter reports each request it answers: Succeeded(op), or Failed(op, ...), which returns
// the errno to reply with. A failure is counted per operation and errno and logged: at debug
// level when the errno is an ordinary answer (ENOENT from a lookup, ENOTEMPTY from rmdir, ENODATA
// from getxattr: the caller asked a question and got its answer), at warning level when it is
// the daemon's or the disk's failure (EIO, ENOSPC, ENOMEM...). Logging goes through a rate
// limit of its own, so that a failing disk answering every request with EIO costs a bounded
// number of lines and does not crowd out the libraries' messages. The counters appear in
// /.kdn/stats as `fuse.<op>.ok N` and `fuse.<op>.<ERRNO> N`.
#ifndef KDN_FS_KDNFS_REQUEST_OUTCOMES_H_
#define KDN_FS_KDNFS_REQUEST_OUTCOMES_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>

#include "kdn/logger.h"
#include "kdn/status.h"

namespace kdn::fs {

// The requests kdnfs answers (those that can fail; FORGET has no reply).
enum class FsOp : uint8_t {
  kLookup,
  kGetattr,
  kSetattr,
  kReadlink,
  kMknod,
  kMkdir,
  kUnlink,
  kRmdir,
  kSymlink,
  kRename,
  kLink,
  kOpen,
  kRead,
  kWrite,
  kFlush,
  kRelease,
  kFsync,
  kOpendir,
  kReaddir,
  kReaddirplus,
  kReleasedir,
  kFsyncdir,
  kStatfs,
  kSetxattr,
  kGetxattr,
  kListxattr,
  kRemovexattr,
  kCreate,
};
inline constexpr size_t kFsOpCount = static_cast<size_t>(FsOp::kCreate) + 1;
std::string_view FsOpName(FsOp op);  // "lookup", "getxattr"...
// "ENOENT", or "E<n>" for a number the C library has no name for.
std::string ErrnoName(int err);

class RequestOutcomes {
 public:
  // Messages go to `log` (may be null: counted only).
  explicit RequestOutcomes(std::shared_ptr<Logger> log);

  void Succeeded(FsOp op);
  // Counts and logs a failure; returns `err` (EIO when it is not a valid errno) for the reply.
  int Failed(FsOp op, int err, std::string_view what);
  // The same for a Status: its errno (Status::sys_errno), its message.
  int Failed(FsOp op, const Status& status);

  uint64_t ok(FsOp op) const;
  uint64_t errors(FsOp op, int err) const;
  // The /.kdn/stats lines: `fuse.<op>.ok N` for every operation, `fuse.<op>.<ERRNO> N` for each
  // errno it failed with.
  void Render(std::ostream& out) const;
  // Every count: `err` 0 for the successes of `op` (every operation, even at 0), else each errno
  // it failed with (only those seen). For /.kdn/metrics.
  void Visit(const std::function<void(FsOp op, int err, uint64_t count)>& visit) const;

 private:
  // errno values 1..kMaxErrno-1 are counted by name; others (never seen on Linux) as EIO.
  static constexpr int kMaxErrno = 134;
  struct PerOp {
    std::atomic<uint64_t> ok{0};
    std::array<std::atomic<uint64_t>, kMaxErrno> errors{};
  };
  std::shared_ptr<RateLimitedLogger> log_;
  std::array<PerOp, kFsOpCount> ops_;
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_REQUEST_OUTCOMES_H_
