#include "fs/kdnfs/request_outcomes.h"

#include <cerrno>
#include <chrono>
#include <cstring>

namespace kdn::fs {
namespace {

// Errors that answer the caller's question rather than report a failure of the daemon: the
// kernel and tools expect them every day (a lookup of a missing name, rmdir of a full directory).
bool IsOrdinaryAnswer(int err) {
  switch (err) {
    case ENOENT:
    case EEXIST:
    case ENOTEMPTY:
    case ENOTDIR:
    case EISDIR:
    case ENODATA:
    case ERANGE:
    case EACCES:
    case EPERM:
    case EINVAL:
    case ENAMETOOLONG:
    case EXDEV:
    case ENOSYS:
    case EOPNOTSUPP:
    case ELOOP:
    case EROFS:
    case ETXTBSY:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string_view FsOpName(FsOp op) {
  switch (op) {
    case FsOp::kLookup: return "lookup";
    case FsOp::kGetattr: return "getattr";
    case FsOp::kSetattr: return "setattr";
    case FsOp::kReadlink: return "readlink";
    case FsOp::kMknod: return "mknod";
    case FsOp::kMkdir: return "mkdir";
    case FsOp::kUnlink: return "unlink";
    case FsOp::kRmdir: return "rmdir";
    case FsOp::kSymlink: return "symlink";
    case FsOp::kRename: return "rename";
    case FsOp::kLink: return "link";
    case FsOp::kOpen: return "open";
    case FsOp::kRead: return "read";
    case FsOp::kWrite: return "write";
    case FsOp::kFlush: return "flush";
    case FsOp::kRelease: return "release";
    case FsOp::kFsync: return "fsync";
    case FsOp::kOpendir: return "opendir";
    case FsOp::kReaddir: return "readdir";
    case FsOp::kReaddirplus: return "readdirplus";
    case FsOp::kReleasedir: return "releasedir";
    case FsOp::kFsyncdir: return "fsyncdir";
    case FsOp::kStatfs: return "statfs";
    case FsOp::kSetxattr: return "setxattr";
    case FsOp::kGetxattr: return "getxattr";
    case FsOp::kListxattr: return "listxattr";
    case FsOp::kRemovexattr: return "removexattr";
    case FsOp::kCreate: return "create";
  }
  return "unknown";
}

std::string ErrnoName(int err) {
  const char* name = ::strerrorname_np(err);
  return name != nullptr ? std::string(name) : "E" + std::to_string(err);
}

RequestOutcomes::RequestOutcomes(std::shared_ptr<Logger> log)
    : log_(std::make_shared<RateLimitedLogger>(std::move(log), 50, std::chrono::seconds(10))) {}

void RequestOutcomes::Succeeded(FsOp op) {
  ops_[static_cast<size_t>(op)].ok.fetch_add(1, std::memory_order_relaxed);
}

int RequestOutcomes::Failed(FsOp op, int err, std::string_view what) {
  if (err <= 0 || err >= kMaxErrno) err = EIO;
  ops_[static_cast<size_t>(op)].errors[static_cast<size_t>(err)].fetch_add(
      1, std::memory_order_relaxed);
  const LogLevel level = IsOrdinaryAnswer(err) ? LogLevel::kDebug : LogLevel::kWarning;
  log_->Log(level, std::string(FsOpName(op)) + ": " + ErrnoName(err) +
                       (what.empty() ? std::string() : ": " + std::string(what)));
  return err;
}

int RequestOutcomes::Failed(FsOp op, const Status& status) {
  return Failed(op, status.sys_errno(), status.ToString());
}

uint64_t RequestOutcomes::ok(FsOp op) const {
  return ops_[static_cast<size_t>(op)].ok.load(std::memory_order_relaxed);
}

uint64_t RequestOutcomes::errors(FsOp op, int err) const {
  if (err <= 0 || err >= kMaxErrno) return 0;
  return ops_[static_cast<size_t>(op)].errors[static_cast<size_t>(err)].load(
      std::memory_order_relaxed);
}

void RequestOutcomes::Visit(
    const std::function<void(FsOp op, int err, uint64_t count)>& visit) const {
  for (size_t i = 0; i < kFsOpCount; ++i) {
    const FsOp op = static_cast<FsOp>(i);
    visit(op, 0, ops_[i].ok.load(std::memory_order_relaxed));
    for (int err = 1; err < kMaxErrno; ++err) {
      const uint64_t n = ops_[i].errors[static_cast<size_t>(err)].load(std::memory_order_relaxed);
      if (n != 0) visit(op, err, n);
    }
  }
}

void RequestOutcomes::Render(std::ostream& out) const {
  for (size_t i = 0; i < kFsOpCount; ++i) {
    const std::string prefix = "fuse." + std::string(FsOpName(static_cast<FsOp>(i))) + ".";
    out << prefix << "ok " << ops_[i].ok.load(std::memory_order_relaxed) << '\n';
    for (int err = 1; err < kMaxErrno; ++err) {
      const uint64_t n = ops_[i].errors[static_cast<size_t>(err)].load(std::memory_order_relaxed);
      if (n != 0) out << prefix << ErrnoName(err) << ' ' << n << '\n';
    }
  }
}

}  // namespace kdn::fs
