// kdnfs's FUSE adapter: every low-level request is translated into one Filesystem call and its
// result into one reply. Read it top to bottom: helpers, the request handlers in the order of
// fuse_lowlevel_ops, the operation table, then the session (mount, loop, notifications).
//
// How kdnfs talks to the kernel, and why:
// - OPEN answers ENOSYS, so the kernel stops sending OPEN and RELEASE for regular files (no-open
//   mode) and keeps their pages cached between opens (committed content is immutable). An open
//   costs no round trip; writes arrive keyed by inode, and the FLUSH of every close() still
//   comes (fh 0), which is where staged content is committed. CREATE still returns a handle.
// - FLUSH is the one round trip left on a read-only open and close (the kernel sends it for every
//   close, and only the whole connection can turn it off). A read-write mount needs it: it is
//   where a writer's close commits, and where an invalid `.kv` fails that close. A read-only
//   mount (-o ro) answers it ENOSYS, and the kernel stops sending it.
// - atomic_o_trunc is off: O_TRUNC arrives as SETATTR(size 0), which the logic stages.
// - default_permissions: the kernel checks modes, owners and sticky bits.
// - 1 MiB reads and writes; a large kernel readahead window (set on the mount's bdi), many
//   background requests and enough threads, so that a sequential read keeps the disk's queue
//   full.
// - Requests are served by SessionLoop (session_loop.h), not libfuse's multi-threaded loop: one
//   thread receives, answers the requests that never wait for the kernel or the disk itself (a
//   FLUSH with nothing staged, RELEASE, LOOKUP, GETATTR, GETXATTR: see Run) and queues every
//   other request for the pool (see session_loop.h for what it changes
//   and what it does not). Where the kernel
//   offers FUSE over io_uring, requests come from per-CPU queues instead (fuse_uring.h).
#define FUSE_USE_VERSION 312  // 3.12: the loop config of fuse_loop_cfg_create()
#include "fs/kdnfs/fuse_adapter.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>

#include "fs/kdnfs/log.h"
#include "fs/kdnfs/mount_util.h"
#include "fs/kdnfs/request_outcomes.h"
#include "fs/kdnfs/session_loop.h"

namespace kdn::fs {
namespace {

constexpr uint32_t kMaxIo = 1u << 20;  // bytes per READ and WRITE request
constexpr uint32_t kInitExt = uint32_t{1} << 30;  // FUSE_INIT_EXT: flags2 is read
constexpr uint32_t kBlockSize = 4096;

Filesystem& Fs(fuse_req_t req) {
  return *static_cast<FuseAdapter*>(fuse_req_userdata(req))->filesystem();
}

// Supplementary groups of the caller, asked of the kernel only when a rule needs them.
bool CallerInGroup(fuse_req_t req, uint32_t gid) {
  gid_t groups[64];
  int n = fuse_req_getgroups(req, 64, groups);
  if (n > 64) {
    std::vector<gid_t> more(static_cast<size_t>(n));
    n = fuse_req_getgroups(req, n, more.data());
    return n > 0 && std::find(more.begin(), more.begin() + n, gid) != more.begin() + n;
  }
  return n > 0 && std::find(groups, groups + n, gid) != groups + n;
}

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller c;
  c.uid = ctx->uid;
  c.gid = ctx->gid;
  c.pid = ctx->pid;
  c.in_group = [req](uint32_t gid) { return CallerInGroup(req, gid); };
  return c;
}

RequestOutcomes& Outcomes(fuse_req_t req) {
  return Fs(req).requests();
}

// The one way a request fails: counted and logged (RequestOutcomes), then answered.
void ReplyError(fuse_req_t req, FsOp op, const Status& st) {
  fuse_reply_err(req, Outcomes(req).Failed(op, st));
}
void ReplyErrno(fuse_req_t req, FsOp op, int err, std::string_view what) {
  fuse_reply_err(req, Outcomes(req).Failed(op, err, what));
}
// A request whose whole answer is a status.
void ReplyStatus(fuse_req_t req, FsOp op, const Status& st) {
  if (!st.ok()) return ReplyError(req, op, st);
  Outcomes(req).Succeeded(op);
  fuse_reply_err(req, 0);
}

struct timespec ToTimespec(int64_t ns) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    ts.tv_sec -= 1;
  }
  return ts;
}

struct stat ToStat(const InodeAttr& a) {
  struct stat st;
  std::memset(&st, 0, sizeof(st));
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = a.rdev;
  st.st_size = static_cast<off_t>(a.size);
  // What the file occupies in the store: whole 4 KiB blocks (shared chunks counted per file).
  st.st_blocks = static_cast<blkcnt_t>((a.size + kBlockSize - 1) / kBlockSize * (kBlockSize / 512));
  // Tools size their buffers by it: cp and cat then move 1 MiB per request.
  st.st_blksize = S_ISREG(a.mode) ? kMaxIo : kBlockSize;
  st.st_atim = ToTimespec(a.atime_ns);
  st.st_mtim = ToTimespec(a.mtime_ns);
  st.st_ctim = ToTimespec(a.ctime_ns);
  return st;
}

fuse_entry_param ToEntryParam(const Entry& e) {
  fuse_entry_param p;
  std::memset(&p, 0, sizeof(p));
  p.ino = e.attr.ino;
  p.generation = 0;  // store inode numbers are never reused
  p.attr = ToStat(e.attr);
  p.attr_timeout = e.attr_timeout;
  p.entry_timeout = e.entry_timeout;
  return p;
}

void ReplyEntry(fuse_req_t req, FsOp op, const Result<Entry>& entry) {
  if (!entry.ok()) return ReplyError(req, op, entry.status());
  if (entry->attr.ino == 0 && entry->entry_timeout <= 0) {
    return ReplyErrno(req, op, ENOENT, "no such name (not cached)");
  }
  Outcomes(req).Succeeded(op);
  fuse_entry_param p = ToEntryParam(*entry);
  fuse_reply_entry(req, &p);
}

std::string_view Name(const char* name) {
  return std::string_view(name);
}

// One read buffer per worker thread, 4 KiB aligned so that the store reads straight into it.
std::byte* ReadBuffer() {
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<std::byte, Free> buffer(
      static_cast<std::byte*>(std::aligned_alloc(4096, kMaxIo)));
  return buffer.get();
}

// ---- request handlers, in the order of fuse_lowlevel_ops ---------------------------------------

void OnInit(void* userdata, fuse_conn_info* conn) {
  auto* adapter = static_cast<FuseAdapter*>(userdata);
  conn->want &= ~(FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_WRITEBACK_CACHE |
                  FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                  FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK);
  const unsigned wanted = FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_CACHE_SYMLINKS |
                          FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO |
                          FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_ASYNC_DIO;
  conn->want |= conn->capable & wanted;
  conn->max_write = kMaxIo;
  conn->max_read = kMaxIo;  // libfuse 3.14 also needs it here, not only as -o max_read
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  conn->time_gran = 1;
  adapter->set_no_open(conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
  adapter->Initialized();
}

void OnDestroy(void* userdata) {
  static_cast<FuseAdapter*>(userdata)->filesystem()->CommitAll();
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyEntry(req, FsOp::kLookup, Fs(req).Lookup(CallerOf(req), parent, Name(name)));
}

void OnForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Fs(req).Forget(ino, nlookup);
  fuse_reply_none(req);
}

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  auto attr = Fs(req).GetAttr(ino);
  if (!attr.ok()) return ReplyError(req, FsOp::kGetattr, attr.status());
  Outcomes(req).Succeeded(FsOp::kGetattr);
  struct stat st = ToStat(attr->attr);
  fuse_reply_attr(req, &st, attr->timeout);
}

int64_t TimeArg(const struct timespec& ts) {
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void OnSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  SetAttrRequest r;
  if (to_set & FUSE_SET_ATTR_MODE) r.mode = attr->st_mode & 07777;
  if (to_set & FUSE_SET_ATTR_UID) r.uid = attr->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) r.gid = attr->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) r.size = static_cast<uint64_t>(attr->st_size);
  if (to_set & FUSE_SET_ATTR_ATIME_NOW)
    r.atime_ns = kTimeNow;
  else if (to_set & FUSE_SET_ATTR_ATIME)
    r.atime_ns = TimeArg(attr->st_atim);
  if (to_set & FUSE_SET_ATTR_MTIME_NOW)
    r.mtime_ns = kTimeNow;
  else if (to_set & FUSE_SET_ATTR_MTIME)
    r.mtime_ns = TimeArg(attr->st_mtim);
  if (to_set & FUSE_SET_ATTR_CTIME) r.ctime_ns = TimeArg(attr->st_ctim);
  if (r.size) {  // not while the content is open for passthrough reading (passthrough.h)
    Status busy =
        static_cast<FuseAdapter*>(fuse_req_userdata(req))->passthrough().CheckChangeable(ino);
    if (!busy.ok()) return ReplyError(req, FsOp::kSetattr, busy);
  }
  auto result = Fs(req).SetAttr(CallerOf(req), ino, r);
  if (!result.ok()) return ReplyError(req, FsOp::kSetattr, result.status());
  Outcomes(req).Succeeded(FsOp::kSetattr);
  struct stat st = ToStat(result->attr);
  fuse_reply_attr(req, &st, result->timeout);
}

void OnReadlink(fuse_req_t req, fuse_ino_t ino) {
  auto target = Fs(req).ReadLink(ino);
  if (!target.ok()) return ReplyError(req, FsOp::kReadlink, target.status());
  Outcomes(req).Succeeded(FsOp::kReadlink);
  fuse_reply_readlink(req, target->c_str());
}

void OnMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  ReplyEntry(req, FsOp::kMknod, Fs(req).MakeNode(CallerOf(req), parent, Name(name), mode, rdev));
}

void OnMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  ReplyEntry(req, FsOp::kMkdir, Fs(req).MakeDir(CallerOf(req), parent, Name(name), mode));
}

void OnUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyStatus(req, FsOp::kUnlink, Fs(req).Unlink(CallerOf(req), parent, Name(name)));
}

void OnRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReplyStatus(req, FsOp::kRmdir, Fs(req).Rmdir(CallerOf(req), parent, Name(name)));
}

void OnSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  ReplyEntry(req, FsOp::kSymlink, Fs(req).MakeSymlink(CallerOf(req), parent, Name(name), Name(link)));
}

void OnRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  Status st = Fs(req).Rename(CallerOf(req), parent, Name(name), newparent, Name(newname), flags);
  ReplyStatus(req, FsOp::kRename, st);
}

void OnLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  ReplyEntry(req, FsOp::kLink, Fs(req).Link(CallerOf(req), ino, newparent, Name(newname)));
}

// An OPEN while passthrough is on (passthrough.h). The reply is made here, not by
// fuse_reply_open: libfuse 3.14 knows neither FOPEN_PASSTHROUGH nor the backing id.
void OpenTracked(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, Passthrough& pt) {
  std::optional<CommittedContent> content;
  if ((fi->flags & O_ACCMODE) == O_RDONLY && (fi->flags & O_TRUNC) == 0) {
    content = Fs(req).CommittedForRead(ino);
  }
  Passthrough::Decision d = pt.Open(ino, fi->flags, content);
  if (d.error != 0) return ReplyErrno(req, FsOp::kOpen, d.error, "passthrough open");
  fuse_abi::OpenOut out;
  std::memset(&out, 0, sizeof(out));
  out.fh = static_cast<uint64_t>(d.mode);
  if (d.mode == OpenMode::kPassthrough) {
    out.open_flags = fuse_abi::kOpenPassthrough;
    out.backing_id = d.backing_id;
  } else if (d.mode == OpenMode::kDirect) {
    out.open_flags = fuse_abi::kOpenDirectIo;  // committed bytes only: not the writer's pages
  } else if (d.mode == OpenMode::kCachedReader) {
    // Without KEEP_CACHE the kernel drops the inode's pages: they hold other bytes.
    out.open_flags = d.keep_cache ? fuse_abi::kOpenKeepCache : 0;
  } else {
    out.open_flags = fuse_abi::kOpenKeepCache;  // committed content is immutable
  }
  // A read-only file's close has nothing to commit (its process's writers commit at their own
  // close): no FLUSH round trip for it. What an open+read+close costs is then the OPEN.
  if ((fi->flags & O_ACCMODE) == O_RDONLY) out.open_flags |= fuse_abi::kOpenNoFlush;
  Outcomes(req).Succeeded(FsOp::kOpen);
  if (fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof(out)) != 0) {
    pt.Release(ino, d.mode);  // the open was interrupted: no RELEASE will come for it
  }
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* adapter = static_cast<FuseAdapter*>(fuse_req_userdata(req));
  // Control files are generated on each read, and never pass through.
  bool passthrough = adapter->passthrough().active();
  if (passthrough && !ControlFiles::IsControl(ino)) {
    return OpenTracked(req, ino, fi, adapter->passthrough());
  }
  // (Not while passthrough is on: ENOSYS would end OPENs for the whole connection.)
  if (adapter->no_open() && !passthrough) {
    // No-open mode from now on, for the whole connection (see the top of this file).
    fuse_reply_err(req, ENOSYS);
    return;
  }
  // A kernel without no-open support, or a control file while passthrough is on: the same
  // behaviour, one round trip dearer.
  fi->fh = 0;
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  size = std::min<size_t>(size, kMaxIo);
  std::byte* buf = ReadBuffer();
  if (buf == nullptr) return ReplyErrno(req, FsOp::kRead, ENOMEM, "no read buffer");
  // A reader opened beside a writer sees the committed content while the writer is at work
  // (passthrough.h).
  const bool direct = fi != nullptr && fi->fh == static_cast<uint64_t>(OpenMode::kDirect);
  const auto view =
      direct && static_cast<FuseAdapter*>(fuse_req_userdata(req))->passthrough().WriterOpen(ino)
          ? Filesystem::ReadView::kCommitted
          : Filesystem::ReadView::kLatest;
  auto n = Fs(req).Read(ino, static_cast<uint64_t>(off), {buf, size}, view);
  if (!n.ok()) return ReplyError(req, FsOp::kRead, n.status());
  Outcomes(req).Succeeded(FsOp::kRead);
  fuse_reply_buf(req, reinterpret_cast<const char*>(buf), *n);
}

void OnWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info*) {
  auto n = Fs(req).Write(CallerOf(req), ino, static_cast<uint64_t>(off),
                         {reinterpret_cast<const std::byte*>(buf), size});
  if (!n.ok()) return ReplyError(req, FsOp::kWrite, n.status());
  Outcomes(req).Succeeded(FsOp::kWrite);
  fuse_reply_write(req, *n);
}

void OnFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (static_cast<FuseAdapter*>(fuse_req_userdata(req))->read_only()) {
    fuse_reply_err(req, ENOSYS);  // nothing to commit, ever: no more FLUSH on this connection
    return;
  }
  ReplyStatus(req, FsOp::kFlush, Fs(req).Flush(CallerOf(req), ino));
}

void OnRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // Content was committed at FLUSH. The handle says how the file was served (passthrough.h); 0
  // when passthrough is off.
  auto* adapter = static_cast<FuseAdapter*>(fuse_req_userdata(req));
  if (fi->fh <= static_cast<uint64_t>(OpenMode::kCachedReader)) {
    adapter->passthrough().Release(ino, static_cast<OpenMode>(fi->fh));
  }
  ReplyStatus(req, FsOp::kRelease, Status::OK());
}

void OnFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  ReplyStatus(req, FsOp::kFsync, Fs(req).Fsync(CallerOf(req), ino));
}

void OnOpendir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // Listings are stateless (store cookies are stable), so a directory handle holds nothing.
  fi->fh = 0;
  Outcomes(req).Succeeded(FsOp::kOpendir);
  fuse_reply_open(req, fi);
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  std::vector<char> buf(size);
  size_t used = 0;
  // Enough entries to fill the reply with short names; the store reads no more than that.
  size_t estimate = size / (plus ? 160 : 32) + 2;
  auto fill = [&](std::string_view name, const Entry& entry, uint64_t next) {
    std::string n(name);
    size_t need;
    if (plus) {
      fuse_entry_param p = ToEntryParam(entry);
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, n.c_str(), &p,
                                    static_cast<off_t>(next));
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof(st));
      st.st_ino = entry.attr.ino;
      st.st_mode = entry.attr.mode;
      need = fuse_add_direntry(req, buf.data() + used, size - used, n.c_str(), &st,
                               static_cast<off_t>(next));
    }
    if (need > size - used) return false;
    used += need;
    return true;
  };
  Status st = Fs(req).ReadDir(ino, static_cast<uint64_t>(off), plus, estimate, fill);
  const FsOp op = plus ? FsOp::kReaddirplus : FsOp::kReaddir;
  if (!st.ok() && used == 0) return ReplyError(req, op, st);
  Outcomes(req).Succeeded(op);
  fuse_reply_buf(req, buf.data(), used);
}

void OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  ReadDir(req, ino, size, off, false);
}

void OnReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  ReadDir(req, ino, size, off, true);
}

void OnReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  ReplyStatus(req, FsOp::kReleasedir, Status::OK());
}

void OnFsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  // Every namespace change is already committed (it survives kill -9); this makes the changes
  // durable against power loss too.
  ReplyStatus(req, FsOp::kFsyncdir, Fs(req).Fsync(CallerOf(req), ino));
}

void OnStatfs(fuse_req_t req, fuse_ino_t) {
  auto usage = Fs(req).StatFs();
  if (!usage.ok()) return ReplyError(req, FsOp::kStatfs, usage.status());
  Outcomes(req).Succeeded(FsOp::kStatfs);
  struct statvfs sv;
  std::memset(&sv, 0, sizeof(sv));
  sv.f_bsize = kBlockSize;
  sv.f_frsize = kBlockSize;
  sv.f_blocks = usage->capacity_bytes / kBlockSize;
  uint64_t used = std::min(usage->used_bytes, usage->capacity_bytes);
  sv.f_bfree = (usage->capacity_bytes - used) / kBlockSize;  // df's "Used" is blocks - bfree
  sv.f_bavail = std::min<uint64_t>(usage->free_bytes / kBlockSize, sv.f_bfree);
  // Inodes are rows in a database: never the limit.
  sv.f_ffree = sv.f_favail = uint64_t{1} << 32;
  sv.f_files = usage->inodes + sv.f_ffree;
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

// Attribute errors the way the xattr calls spell them (a missing attribute is ENODATA).
void ReplyXattrError(fuse_req_t req, FsOp op, const Status& st) {
  ReplyErrno(req, op, st.IsNotFound() ? ENODATA : st.sys_errno(), st.ToString());
}

void OnSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  Status st =
      Fs(req).SetXattr(CallerOf(req), ino, Name(name), std::string_view(value, size), flags);
  if (!st.ok()) return ReplyXattrError(req, FsOp::kSetxattr, st);
  ReplyStatus(req, FsOp::kSetxattr, st);
}

void ReplyXattrValue(fuse_req_t req, FsOp op, const std::string& value, size_t size) {
  if (size == 0) {
    Outcomes(req).Succeeded(op);
    fuse_reply_xattr(req, value.size());
  } else if (value.size() > size) {
    ReplyErrno(req, op, ERANGE, "value larger than the caller's buffer");
  } else {
    Outcomes(req).Succeeded(op);
    fuse_reply_buf(req, value.data(), value.size());
  }
}

void OnGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto value = Fs(req).GetXattr(CallerOf(req), ino, Name(name));
  if (!value.ok()) return ReplyXattrError(req, FsOp::kGetxattr, value.status());
  ReplyXattrValue(req, FsOp::kGetxattr, *value, size);
}

void OnListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto names = Fs(req).ListXattr(CallerOf(req), ino);
  if (!names.ok()) return ReplyXattrError(req, FsOp::kListxattr, names.status());
  std::string list;
  for (const auto& n : *names) {
    list += n;
    list += '\0';
  }
  ReplyXattrValue(req, FsOp::kListxattr, list, size);
}

void OnRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Status st = Fs(req).RemoveXattr(CallerOf(req), ino, Name(name));
  if (!st.ok()) return ReplyXattrError(req, FsOp::kRemovexattr, st);
  ReplyStatus(req, FsOp::kRemovexattr, st);
}

void OnCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  Passthrough& pt = static_cast<FuseAdapter*>(fuse_req_userdata(req))->passthrough();
  if (pt.any_open() && (fi->flags & O_EXCL) == 0) {
    // O_CREAT of a name that exists opens (and with O_TRUNC truncates) that file: not while it
    // is open for passthrough reading (passthrough.h).
    auto existing = Fs(req).store().Lookup(parent, Name(name));
    if (existing.ok()) {
      Status st = pt.CheckChangeable(existing->ino);
      if (!st.ok()) return ReplyError(req, FsOp::kCreate, st);
    }
  }
  auto entry = Fs(req).Create(CallerOf(req), parent, Name(name), mode, fi->flags);
  if (!entry.ok()) return ReplyError(req, FsOp::kCreate, entry.status());
  Outcomes(req).Succeeded(FsOp::kCreate);
  fuse_entry_param p = ToEntryParam(*entry);
  fi->fh = 0;
  fi->keep_cache = 1;
  fi->direct_io = 0;
  OpenMode served = OpenMode::kUntracked;
  if (pt.active()) {  // a writer: served by kdnfs, in cached mode
    served = pt.OpenServed(entry->attr.ino).mode;
    fi->fh = static_cast<uint64_t>(served);
  }
  if (fuse_reply_create(req, &p, fi) == -ENOENT) {
    // The creating open(2) was interrupted: the kernel never took the reference.
    Fs(req).Forget(entry->attr.ino, 1);
    pt.Release(entry->attr.ino, served);
  }
}

void OnForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Filesystem& fs = Fs(req);
  for (size_t i = 0; i < count; ++i) fs.Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = OnInit;
  ops.destroy = OnDestroy;
  ops.lookup = OnLookup;
  ops.forget = OnForget;
  ops.getattr = OnGetattr;
  ops.setattr = OnSetattr;
  ops.readlink = OnReadlink;
  ops.mknod = OnMknod;
  ops.mkdir = OnMkdir;
  ops.unlink = OnUnlink;
  ops.rmdir = OnRmdir;
  ops.symlink = OnSymlink;
  ops.rename = OnRename;
  ops.link = OnLink;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.write = OnWrite;
  ops.flush = OnFlush;
  ops.release = OnRelease;
  ops.fsync = OnFsync;
  ops.opendir = OnOpendir;
  ops.readdir = OnReaddir;
  ops.releasedir = OnReleasedir;
  ops.fsyncdir = OnFsyncdir;
  ops.statfs = OnStatfs;
  ops.setxattr = OnSetxattr;
  ops.getxattr = OnGetxattr;
  ops.listxattr = OnListxattr;
  ops.removexattr = OnRemovexattr;
  ops.create = OnCreate;
  ops.forget_multi = OnForgetMulti;
  ops.readdirplus = OnReaddirplus;
  return ops;
}

}  // namespace

// ---- the session ------------------------------------------------------------------------------

Result<std::unique_ptr<FuseAdapter>> FuseAdapter::Create(Filesystem* fs,
                                                         const FuseOptions& options) {
  std::unique_ptr<FuseAdapter> adapter(new FuseAdapter(fs, options));
  std::vector<std::string> argv = {"kdnfs"};
  auto add = [&argv](std::string opt) {
    argv.push_back("-o");
    argv.push_back(std::move(opt));
  };
  add("default_permissions");
  add("max_read=" + std::to_string(kMaxIo));
  for (const auto& o : options.fuse_options) add(o);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(args.size()), args.data());
  static const fuse_lowlevel_ops ops = MakeOps();
  adapter->session_ = fuse_session_new(&fargs, &ops, sizeof(ops), adapter.get());
  fuse_opt_free_args(&fargs);
  if (adapter->session_ == nullptr) {
    return Status::InvalidArgument("libfuse refused the mount options (see above)");
  }
  // Small files are read from the page cache only without an origin (passthrough.h).
  adapter->passthrough_ =
      std::make_unique<Passthrough>(&fs->store(), &fs->counters(), options.passthrough,
                                    fs->HasOrigin() ? 0 : Passthrough::kCachedReadMax);
  fs->SetKernelCache(adapter.get());
  return adapter;
}

FuseAdapter::~FuseAdapter() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (notifier_.joinable()) notifier_.join();
  if (sweeper_.joinable()) sweeper_.join();
  fs_->SetKernelCache(nullptr);
  if (session_ != nullptr) {
    if (mounted_) fuse_session_unmount(session_);
    fuse_session_destroy(session_);
  }
}

Status FuseAdapter::Mount(const std::string& mountpoint) {
  if (fuse_session_mount(session_, mountpoint.c_str()) != 0) {
    return Status::IOError("cannot mount on " + mountpoint + " (see above)");
  }
  mountpoint_ = mountpoint;
  mounted_ = true;
  return Status::OK();
}

void FuseAdapter::Initialized() {
  {
    MutexLock lock(mu_);
    initialized_ = true;
  }
  cv_.notify_all();
}

Status FuseAdapter::Run() {
  notifier_ = std::thread([this] { NotifierLoop(); });
  sweeper_ = std::thread([this] { SweeperLoop(); });

  SessionLoop::Options loop;
  loop.max_threads = options_.max_threads;
  loop.spin = options_.spin;
  // A close of a file with nothing staged is answered from memory (Filesystem::Flush calls the
  // blocking hook before anything slower), so the receiving thread answers it itself.
  // An io_uring queue thread cannot hand its work off, so there only a FLUSH of a file with
  // nothing staged (no commit to wait for) is answered inline.
  // RELEASE is answered inline too, for passthrough: it only updates the inode's open-mode
  // counts (passthrough.h), and a close() returns before its RELEASE is answered. The kernel
  // queues that RELEASE before the client's next OPEN of the file; answered in order by the one
  // receiver, the OPEN then finds the counts of the files really open (answered by a pool
  // thread, it would often find the closed writer still counted and be served by kdnfs instead
  // of passing through).
  // A read-only OPEN of committed content that passthrough can answer without waiting (no
  // conflicting open of the inode) is answered inline too: it costs a metadata lookup and, for
  // the inode's first open, an open(2) of its chunk file and a backing registration; through a
  // pool thread it also cost a wakeup, most of what an open+read+close of a small file took.
  loop.answers_inline = [fs = fs_, pt = passthrough_.get()](const fuse_in_header& h,
                                                            const void* args) {
    if (h.opcode == FUSE_OPEN) {
      fuse_open_in in;
      if (h.len < sizeof(h) + sizeof(in) || !pt->active() || ControlFiles::IsControl(h.nodeid)) {
        return false;
      }
      std::memcpy(&in, args, sizeof(in));
      const int flags = static_cast<int>(in.flags);
      return (flags & O_ACCMODE) == O_RDONLY && (flags & O_TRUNC) == 0 &&
             !fs->HasStaged(h.nodeid) && pt->OpensAtOnce(h.nodeid);
    }
    // LOOKUP, GETATTR and GETXATTR are reads of the database (SQLite's pages are nearly
    // always in the page cache) and never wait for the kernel; a create in one directory costs
    // a LOOKUP of the new name, a GETATTR of the directory (its attributes change with every
    // entry) and a GETXATTR (security.capability, at the first write), and each handed to a
    // worker cost two more wakeups. Not with an origin tier (a lookup may list the origin),
    // nor a GETATTR of a file being written (it waits for a commit in progress).
    // (A lookup in a control directory may read a chunk: `.kdn-prefix/<hash>`.)
    // The first WRITE of a file just created, small enough to be staged in memory, costs no
    // more than these (no staging file any more), and a small file's create has one.
    if (h.opcode == FUSE_WRITE) {
      fuse_write_in in;
      if (h.len < sizeof(h) + sizeof(in)) return false;
      std::memcpy(&in, args, sizeof(in));
      return in.offset <= StagedFile::kMostInMemory &&
             fs->FirstWriteStaysInMemory(h.nodeid, in.offset + in.size);
    }
    if (h.opcode == FUSE_LOOKUP) return !fs->HasOrigin() && !ControlFiles::IsControl(h.nodeid);
    if (h.opcode == FUSE_GETXATTR) return !fs->HasOrigin();
    if (h.opcode == FUSE_GETATTR) return !fs->HasOrigin() && !fs->HasStaged(h.nodeid);
    return (h.opcode == FUSE_FLUSH && !fs->HasStaged(h.nodeid)) || h.opcode == FUSE_RELEASE;
  };
  loop.io_uring = options_.io_uring;
  loop.batch_scheduling = options_.batch_scheduling;
  loop.patch_init = [this](uint64_t offered, fuse_init_out& reply) {
    if (!passthrough_->Negotiate(offered, fuse_session_fd(session_))) return;
    reply.flags |= kInitExt;
    reply.flags2 |= static_cast<uint32_t>(fuse_abi::kInitPassthrough >> 32);
    // Readers beside a writer are direct files (kDirect); mapping one must work as it does for
    // any other file.
    if (offered & fuse_abi::kInitDirectIoAllowMmap) {
      reply.flags2 |= static_cast<uint32_t>(fuse_abi::kInitDirectIoAllowMmap >> 32);
    }
    // max_stack_depth follows flags2 (unused[0] in the 7.38 header installed here).
    uint32_t depth = fuse_abi::kMaxStackDepth;
    std::memcpy(reinterpret_cast<char*>(&reply) + offsetof(fuse_init_out, flags2) + 4, &depth,
                sizeof(depth));
  };
  fs_->SetBlockingHook(&SessionLoop::BeforeBlocking);
  passthrough_->SetBlockingHook(&SessionLoop::BeforeBlocking);
  auto ended = SessionLoop::Run(session_, loop);

  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  notifier_.join();
  sweeper_.join();
  fuse_session_unmount(session_);
  mounted_ = false;
  if (!ended.ok())
    return Status::IOError("the FUSE session ended with an error: " + ended.status().ToString());
  if (*ended > 0) KDN_LOG_INFO("signal %d: unmounting", *ended);
  return Status::OK();
}

void FuseAdapter::ForgetName(Ino parent, const std::string& name, Ino ino) {
  {
    MutexLock lock(mu_);
    if (stopping_) return;
    forgotten_.push_back(Forgotten{parent, name, ino});
  }
  cv_.notify_all();
}

void FuseAdapter::InvalidateInode(Ino ino, bool data) {
  // Offset -1: attributes only; 0 with length 0: attributes and every cached page.
  int rc = fuse_lowlevel_notify_inval_inode(session_, ino, data ? 0 : -1, 0);
  if (rc != 0 && rc != -ENOENT) {
    KDN_LOG_DEBUG("invalidate inode %llu: %s", static_cast<unsigned long long>(ino),
                  std::strerror(-rc));
  }
}

void FuseAdapter::NotifierLoop() {
  UniqueLock lock(mu_);
  while (!initialized_ && !stopping_) cv_.wait(lock);
  if (!stopping_) {
    lock.unlock();
    TuneReadahead();
    lock.lock();
  }
  for (;;) {
    while (!stopping_ && forgotten_.empty()) cv_.wait(lock);
    if (stopping_) return;
    Forgotten f = std::move(forgotten_.front());
    forgotten_.pop_front();
    lock.unlock();
    // Not from a request handler: the kernel may hold the parent's lock while it waits for one.
    fuse_lowlevel_notify_inval_entry(session_, f.parent, f.name.c_str(), f.name.size());
    fuse_lowlevel_notify_inval_inode(session_, f.ino, 0, 0);
    lock.lock();
  }
}

void FuseAdapter::SweeperLoop() {
  UniqueLock lock(mu_);
  while (!stopping_) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!stopping_ && cv_.wait_until(lock, until) == std::cv_status::no_timeout) {
    }
    if (stopping_) return;
    lock.unlock();
    fs_->CommitIdle();
    passthrough_->ExpireIdleBackings(std::chrono::steady_clock::now());
    lock.lock();
  }
}

void FuseAdapter::TuneReadahead() {
  if (options_.readahead_bytes == 0 || mountpoint_.empty()) return;
  auto mp = AbsoluteMountPoint(mountpoint_);
  if (!mp.ok()) return;
  // The INIT reply caps the readahead at what it says; it is processed right after the init
  // handler returns, so check that the value held and write it again if not.
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto mount = FindMount(*mp);
    if (mount && mount->fs_type.starts_with("fuse")) {
      Status st = SetReadahead(mount->major, mount->minor, options_.readahead_bytes);
      if (!st.ok()) {
        KDN_LOG_WARNING("cannot set the readahead of %s: %s", mp->c_str(), st.ToString().c_str());
        return;
      }
    }
    {
      UniqueLock lock(mu_);
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
      while (!stopping_ && cv_.wait_until(lock, until) == std::cv_status::no_timeout) {
      }
      if (stopping_) return;
    }
    if (!mount) continue;
    std::string path = "/sys/class/bdi/" + std::to_string(mount->major) + ":" +
                       std::to_string(mount->minor) + "/read_ahead_kb";
    FILE* f = std::fopen(path.c_str(), "r");
    unsigned long long kb = 0;
    bool read_back = f && std::fscanf(f, "%llu", &kb) == 1;
    if (f) std::fclose(f);
    if (read_back && kb * 1024 == options_.readahead_bytes) {
      KDN_LOG_DEBUG("readahead of %s set to %llu KiB", mp->c_str(), kb);
      return;
    }
  }
  KDN_LOG_WARNING("the readahead of %s did not stay at %llu KiB", mp->c_str(),
                  static_cast<unsigned long long>(options_.readahead_bytes / 1024));
}

}  // namespace kdn::fs
