// FUSE passthrough (Linux 6.9 and later): the kernel serves reads, mmap and O_DIRECT of a
// committed file straight from its chunk file in the store, without a request to kdnfs.
//
// Why: through the daemon, cold reads reached 0.63-0.71 of the disk and warm reads 0.34-0.52 of
// ext4 (every READ is a round trip, and FUSE's own page cache holds 4 KiB folios only). A
// passthrough file is read by the backing filesystem with its own page cache and readahead.
//
// The protocol, which libfuse 3.14 predates (so kdnfs speaks it itself, as it does io_uring):
// - INIT: the kernel offers FUSE_PASSTHROUGH; kdnfs answers with it and max_stack_depth 1 (the
//   chunk files are on a plain filesystem). Negotiate() decides; FuseUring's writev hook patches
//   the reply. Declined (logged once, why) when -o passthrough=off, when the kernel does not
//   offer it, or when the daemon lacks CAP_SYS_ADMIN (FUSE_DEV_IOC_BACKING_OPEN needs it).
//   Then kdnfs serves reads itself, as before, in no-open mode.
// - OPEN of a committed regular file for reading: the store opens the chunk file read-only
//   (Store::OpenChunkForRead), FUSE_DEV_IOC_BACKING_OPEN registers it with the connection, and
//   the open reply carries FOPEN_PASSTHROUGH and the backing id. The kernel keeps its own
//   reference for the files still open, so an old reader of a rewritten file keeps reading the
//   old chunk.
// - Backing ids are kept per chunk, not per open: once the last passthrough file of a chunk is
//   released its id stays registered (idle) for kIdleBacking, and a later open of any file with
//   that content reuses it. Opening a small file again then costs the OPEN round trip and no
//   chunk-file open, fstat or ioctl (which were most of what kdnfs spent on such an open).
//   Chunks are immutable and named by their content, so an idle id always holds the right
//   bytes; it holds the chunk file open, so the space of a deleted chunk goes back to the host
//   when its idle id is closed (FUSE_DEV_IOC_BACKING_CLOSE): after kIdleBacking
//   (ExpireIdleBackings, called every second), or sooner when more than kMaxIdleBackings are
//   idle (least recently used first).
//
// The kernel's rules (fs/fuse/iomode.c, Linux 6.18), which Open() keeps:
// - while a file of an inode is open in passthrough mode, every open of that inode must pass
//   through too, to the same backing file ("FOPEN_PASSTHROUGH expected": the open fails with
//   EIO otherwise, direct-io included), and
// - an inode with a file open in cached (page-cache) mode cannot have one opened in passthrough
//   mode (EIO again).
// So per inode kdnfs counts its open files by mode. A read-only open of committed content
// passes through when no file of the inode is open in cached mode. A read-only open that cannot
// (a writer is at work, or the content is not in a chunk file yet) is served by kdnfs in direct
// mode (FOPEN_DIRECT_IO, kDirect): every READ comes to kdnfs, which answers, while a file of
// the inode is open for writing, with the last committed content
// (Filesystem::ReadView::kCommitted), so a reader never sees a writer's
// bytes before they commit (issue 12, item 5) — the kernel's page cache of the inode, which
// holds the writer's bytes, is not used for it. The kernel leaves direct files out of its
// mode rules until one is mapped (mmap puts it in cached mode), so kdnfs counts them as cached,
// which is the safe side. What stat(2) shows is the newest size (the writer's), so that no
// observer sees a size go backwards (item 6); reads end at the committed size. One gap is the
// kernel's: a reader that maps the file shared while a writer is at work shares the inode's
// pages with the writer. Any other open (a writer) is served by kdnfs in cached mode when no
// passthrough file is open. A
// file open in passthrough mode is therefore busy the way a running executable is: while one is
// open, opening the inode for writing, truncating it, or O_CREAT|O_TRUNC on its name fails with
// ETXTBSY (never EIO), and its content cannot change, so later readers share the backing.
// Replacing a file by rename (write a new name, mv it over: what rsync does) works at any time:
// the old readers keep the old inode and its chunk, new opens find the new one.
//
// Small files (kCachedReadMax bytes or less) are the exception to passing through: a read-only
// open of small committed content is served in cached mode (kCachedReader, FOPEN_KEEP_CACHE):
// its first READ fills the kernel's page cache of the inode from kdnfs, and later opens read
// those pages without a request. Why: for a small file the open is the whole cost, and a
// passthrough open also opens a backing file in the kernel (backing_file_open) and puts it at
// close, about 1 us of the 9-10 us an open+read+close took on the 2-vCPU VM, where ext4 takes
// 1.6-2 us (tests/bench/groups/fs, small_open_read_vs_ext4). Such readers pin the content as
// passthrough readers do (a writer gets ETXTBSY; a reader beside a writer is still direct), so
// a reader never sees a writer's bytes. The kernel may keep the pages only while they are
// this content's: kdnfs remembers which chunk it let an inode's pages hold, and any other (or
// a writer since) makes the open drop them (no FOPEN_KEEP_CACHE). Only without an origin tier:
// there fetches and namespace refreshes change an inode's content behind the kernel, and a
// passthrough reader keeps its chunk where pages could not.
// The counts only err on the safe side (the kernel drops a file's mode before it sends RELEASE,
// and takes it after kdnfs's reply); so that a writer right after a reader's close() does not
// find that reader still counted, RELEASE is answered by the receiving thread, in order, and a
// conflicting open first waits briefly (kBusyWait) for RELEASEs still on their way.
//
// Lock order: Passthrough::mu_ is taken alone or before the store's locks (a backing is
// registered under it so that two first opens of an inode cannot register two); it is never
// taken while Filesystem's locks are held (Open asks the filesystem for the content first).
#ifndef KDN_FS_KDNFS_PASSTHROUGH_H_
#define KDN_FS_KDNFS_PASSTHROUGH_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "base/thread_annotations.h"
#include "fs/kdnfs/filesystem.h"
#include "fs/kdnfs/fs_types.h"
#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::fs {

// The kernel's passthrough ABI (include/uapi/linux/fuse.h, protocol 7.40, Linux 6.9). Debian 12's
// headers predate it, so it is spelled out here.
namespace fuse_abi {
inline constexpr uint64_t kInitPassthrough = uint64_t{1} << 37;  // FUSE_PASSTHROUGH (flags2 bit 5)
// FUSE_DIRECT_IO_ALLOW_MMAP (flags2 bit 4, Linux 6.6): a FOPEN_DIRECT_IO file may be mapped shared.
inline constexpr uint64_t kInitDirectIoAllowMmap = uint64_t{1} << 36;
inline constexpr uint32_t kOpenDirectIo = 1u << 0;               // FOPEN_DIRECT_IO
inline constexpr uint32_t kOpenKeepCache = 1u << 1;              // FOPEN_KEEP_CACHE
inline constexpr uint32_t kOpenNoFlush = 1u << 5;                // FOPEN_NOFLUSH
inline constexpr uint32_t kOpenPassthrough = 1u << 7;            // FOPEN_PASSTHROUGH
inline constexpr uint32_t kMaxStackDepth = 1;  // fuse_init_out.max_stack_depth: over a plain fs
struct OpenOut {                               // struct fuse_open_out
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;  // "padding" before 7.40
};
struct BackingMap {  // struct fuse_backing_map
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
}  // namespace fuse_abi

// How one open file is served; kdnfs hands it to the kernel as the file handle (fh), and the
// RELEASE hands it back.
enum class OpenMode : uint64_t {
  kUntracked = 0,  // passthrough is off for the connection: nothing counted
  kCached = 1,     // kdnfs serves READs, the kernel caches pages
  kDirect = 2,     // a reader beside a writer: kdnfs serves the committed bytes, uncached
  kPassthrough = 3,
  kCachedReader = 4,  // a reader of small committed content: kdnfs fills the page cache once
};

class Passthrough {
 public:
  // `wanted`: -o passthrough=on. `store` and `counters` (shown in /.kdn/stats) must outlive
  // this object.
  // `cached_read_max`: the largest committed content a reader is served in cached mode
  // (kCachedReader) rather than passed through; 0: none (kdnfs passes 0 with an origin tier).
  Passthrough(Store* store, FsCounters* counters, bool wanted,
              uint64_t cached_read_max = kCachedReadMax)
      : store_(store), counters_(counters), wanted_(wanted), cached_read_max_(cached_read_max) {}
  Passthrough(const Passthrough&) = delete;
  Passthrough& operator=(const Passthrough&) = delete;

  // At INIT, with the flags the kernel offers (flags | flags2 << 32) and /dev/fuse: whether to
  // answer with FUSE_PASSTHROUGH. Logs once why not.
  bool Negotiate(uint64_t offered, int dev_fd);
  // Whether the kernel agreed: from then on every OPEN of a regular file is answered (no
  // no-open mode) and goes through Open/Release.
  bool active() const { return active_.load(std::memory_order_acquire); }

  // How long a conflicting open or truncation waits for passthrough files to be released.
  static constexpr std::chrono::milliseconds kBusyWait{200};
  // Small files are read from the kernel's page cache, filled by kdnfs (see the top of this
  // file): one READ of up to 64 KiB fills it, and the open then costs no backing file.
  static constexpr uint64_t kCachedReadMax = 64 << 10;

  struct Decision {
    OpenMode mode = OpenMode::kUntracked;
    int32_t backing_id = -1;  // for kPassthrough
    int error = 0;            // ETXTBSY: refused (nothing counted)
    bool keep_cache = false;  // for kCachedReader: the inode's pages hold this content
  };
  // An open of `ino` with open(2) `flags`; `content` is the committed chunk a read-only open may
  // pass through to (none: staged content, empty, not a regular file). Counted until Release.
  Decision Open(Ino ino, int flags, const std::optional<CommittedContent>& content);
  // An open made by CREATE (a writer of a new inode): cached, counted until Release.
  Decision OpenServed(Ino ino);
  // Before the content of `ino` changes without an open (truncate(2), O_CREAT|O_TRUNC of an
  // existing name): OK, or ETXTBSY while files of it are open in passthrough mode or as cached
  // readers.
  Status CheckChangeable(Ino ino);
  // Whether a read-only Open of `ino` would be decided now, without waiting for RELEASEs (no
  // file of it is open in cached mode alongside passthrough ones). A hint: the state may change
  // before the Open, which then waits as usual (at most kBusyWait).
  bool OpensAtOnce(Ino ino);
  // Called before an Open waits (SessionLoop::BeforeBlocking: an OPEN answered inline by the
  // receiving thread hands receiving off first).
  void SetBlockingHook(void (*hook)()) { blocking_hook_ = hook; }
  // Whether a file of `ino` is open for writing (in cached mode): then a reader in direct mode
  // reads the committed content, not the staged one. Staged content with no writer open (a
  // truncate(2) on a path, committed a moment later) is what every reader sees.
  bool WriterOpen(Ino ino);
  // Whether any file is open in passthrough mode now (cheap).
  bool any_open() const { return backings_in_use_.load(std::memory_order_relaxed) > 0; }
  // The RELEASE of an open file, with what Open decided (the file handle).
  void Release(Ino ino, OpenMode mode);

  // How long a backing id stays registered after the last file that used it was released, and
  // how many may be idle at once (see the top of this file).
  static constexpr std::chrono::seconds kIdleBacking{2};
  static constexpr size_t kMaxIdleBackings = 16384;
  // Closes the backing ids idle since `now - kIdleBacking` or longer.
  void ExpireIdleBackings(std::chrono::steady_clock::time_point now);

 private:
  struct InodeModes {
    uint32_t passthrough = 0;  // files open in passthrough mode
    uint32_t served = 0;       // files open in cached or direct mode
    uint32_t writers = 0;      // of them, in cached mode: open for writing
    uint32_t cached_readers = 0;  // kCachedReader files: they pin the content as passthrough does
    ChunkId chunk;             // the backing of the passthrough files
    int32_t backing_id = -1;
  };
  Decision ServedLocked(InodeModes& m) KDN_REQUIRES(mu_);
  // Waits (at most until `deadline`) until no passthrough file of `ino` is counted, nor, when
  // `cached_readers_too`, a cached reader; false if some still are.
  bool WaitUnpinnedLocked(UniqueLock& lock, Ino ino, bool cached_readers_too,
                          std::chrono::steady_clock::time_point deadline) KDN_REQUIRES(mu_);
  bool UnpinnedLocked(Ino ino, bool cached_readers_too) KDN_REQUIRES(mu_);
  // A cached reader's open of `content`: whether the inode's pages may be kept (they hold this
  // content), remembering that they will from now on.
  bool KeepPagesLocked(Ino ino, const ChunkId& content) KDN_REQUIRES(mu_);
  // A read-only fd of the chunk file, checked to be a regular file of the content's size; -1
  // (logged once) when the store cannot give one.
  int OpenChunkFile(const CommittedContent& content);
  // Registers `fd` with the connection: the backing id, or -1 (logged once).
  int32_t RegisterBackingLocked(int fd) KDN_REQUIRES(mu_);
  void CloseBackingLocked(int32_t id) KDN_REQUIRES(mu_);
  void LogFallbackOnce(const std::string& why);

  Store* const store_;
  FsCounters* const counters_;
  const bool wanted_;
  const uint64_t cached_read_max_;
  std::atomic<bool> active_{false};
  int dev_fd_ = -1;
  std::atomic<bool> fallback_logged_{false};

  std::atomic<uint64_t> backings_in_use_{0};  // backing ids with users
  void (*blocking_hook_)() = nullptr;

  // A registered backing id of a chunk, shared by the inodes whose passthrough files use it.
  struct Backing {
    int32_t id = -1;
    uint32_t users = 0;  // inodes with passthrough files open on it; 0: idle
    std::chrono::steady_clock::time_point idle_since;
    std::list<ChunkId>::iterator idle_pos;  // in idle_, while users == 0
  };
  struct ChunkIdHash {
    size_t operator()(const ChunkId& id) const {
      size_t h;  // a cryptographic hash: any 8 of its bytes are well mixed
      std::memcpy(&h, id.bytes.data(), sizeof(h));
      return h;
    }
  };
  // The id registered for `chunk`, now used by one more inode; -1 when none is.
  int32_t AcquireBackingLocked(const ChunkId& chunk) KDN_REQUIRES(mu_);
  // One inode fewer uses the id of `chunk`: idle at 0 users.
  void ReleaseBackingLocked(const ChunkId& chunk) KDN_REQUIRES(mu_);
  void CloseIdleLocked(std::list<ChunkId>::iterator pos) KDN_REQUIRES(mu_);

  Mutex mu_;  // see the lock order above
  std::condition_variable_any released_;  // a passthrough or cached reader count reached 0
  std::unordered_map<Ino, InodeModes> inodes_ KDN_GUARDED_BY(mu_);
  // The content kdnfs let each inode's page cache keep (cached readers); forgotten when a writer
  // opens the inode. Bounded: emptied at kMaxRememberedPages, which costs each inode one READ.
  static constexpr size_t kMaxRememberedPages = 65536;
  std::unordered_map<Ino, ChunkId> pages_hold_ KDN_GUARDED_BY(mu_);
  std::unordered_map<ChunkId, Backing, ChunkIdHash> backings_by_chunk_ KDN_GUARDED_BY(mu_);
  std::list<ChunkId> idle_ KDN_GUARDED_BY(mu_);  // idle backings, least recently used first
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_PASSTHROUGH_H_
