// The chunk store: content-addressed chunks on local NVMe, and the namespace that names them.
//
// A store is a directory:
//   meta.db           SQLite (WAL, synchronous=NORMAL, see Durability below): chunks, inodes,
//                     directory entries, xattrs, `.kv` metadata and prefix hashes. One
//                     transaction per operation.
//   chunks/ab/<id>    one file per chunk (named by its hex id), holding exactly its bytes: chunk
//                     offset N at file offset N, all-zero 4 KiB blocks of non-`.kv` content left as
//                     holes. Written and read with O_DIRECT through the I/O engine (io_uring).
//   staging/          files being written by kdnfs (handed to the store at commit) and chunk files
//                     being written; stray ones are removed when the store is opened, and with them
//                     the files whose first content they held (NewStagingPath(Ino), or named in
//                     FirstContentSlotsPath()) if those still have none.
//   LOCK              flock()ed for the lifetime of the Store: a second process gets kBusy.
// Only the store's owner may read it: the directories are 0700 and the files 0600 (wider modes
// found at open are fixed and reported in OpenWarnings).
//
// Chunks are content addressed: id = SHA-256 of the bytes, the same bytes are stored once and
// reference counted. A chunk is immutable. Commit order: the bytes are written to a temporary
// file and fdatasync'ed, the file is renamed to its chunk name and its directory synced, then one
// SQLite transaction publishes it; a crash at any point leaves either the old state or the new
// one, and chunk files that no committed row references are removed on the next open. A deleted
// chunk's file is unlinked right after the commit that drops it (its space goes back to the host;
// descriptors already open keep reading it). Every read is verified (per-block xxh3-64 checksums
// of the stored bytes, computed at put time).
//
// Content that starts with the `.kv` magic is validated at put/commit time with VerifyKv
// (kdn/format.h: the complete check `kdnctl verify` runs, in bounded memory) and its header and
// prefix hashes are indexed, so that kdnfs can answer prefix lookups.
// Invalid `.kv` content is refused with kInvalidArgument and nothing changes.
//
// Capacity: a byte limit on the chunks' sizes, each rounded up to 4 KiB. A put that would exceed it evicts chunks that only
// evictable, unpinned references hold, least recently used first (eviction removes every name of
// the files that hold such a chunk); when that is not enough it fails with kNoSpace (ENOSPC) and
// nothing of it is visible.
//
// Every method is thread-safe: many readers and writers may call concurrently. Concurrent changes
// share data syncs and SQLite transactions (group commit), each isolated in its own savepoint.
// Errors carry the errno kdnfs should answer in Status::sys_errno() (ENOTEMPTY, ENOTDIR, EISDIR,
// EEXIST, ENOSPC...).
//
// Durability (SyncPolicy::kFull, the default). Every change is atomic: after any crash it is
// there entirely or not at all. Beyond that, when its call returns:
//   - it survives a crash of the process (kill -9, a bug): its transaction's log (WAL) frames are
//     written to the operating system before the call returns;
//   - it survives a crash of the machine (power loss, kernel panic) once the log is synced:
//     by Sync() (kdnfs calls it for fsync(2), fdatasync(2) and fsync of a directory), at most
//     `log_sync_interval_ms` later (a background thread syncs the log; default 1 s, like ext4's
//     journal commit interval; 0 syncs it before every call returns, as synchronous=FULL did), and
//     when the Store is closed. Changes become durable in the order they were made: a power loss
//     keeps a prefix of them.
//   - content (Put, CommitFileContent) is written and fdatasync'ed before the transaction
//     that publishes it is written, so whatever a power loss keeps of the log never names bytes
//     that are not on the disk; a file keeps its old content or gets its new one, never part.
//   - the file of a chunk that a change deleted is removed only once that change is durable, so a
//     power loss that undoes the deletion never finds the chunk's file gone.
// A single writer therefore pays no disk flush per metadata change (a create, unlink, rename,
// chmod or xattr costs a write to the page cache), and one flush per content commit (its data).
#ifndef KDN_STORE_H_
#define KDN_STORE_H_

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/format.h"
#include "kdn/logger.h"
#include "kdn/status.h"

namespace kdn {

namespace io {
class EngineWrapper;  // iouring/io_engine.h: private to the project, for its tests
}

// SHA-256 of a chunk's bytes: the content id that dedup trusts, so it must be collision
// resistant (XXH3-128 collisions are built in seconds, and a forged one would let one user's bytes
// stand for another's). xxh3 stays for block checksums. The all-zero id means "no chunk" (an empty
// file has none). Its hex form names the chunk's file.
struct ChunkId {
  static constexpr size_t kBytes = 32;
  std::array<uint8_t, kBytes> bytes{};
  std::string ToHex() const;  // 64 lowercase hex digits
  static Result<ChunkId> FromHex(std::string_view hex);
  bool IsZero() const;
  friend bool operator==(const ChunkId&, const ChunkId&) = default;
  friend auto operator<=>(const ChunkId&, const ChunkId&) = default;
};

// Inode numbers are never reused within a store (they only grow) and stay below 2^48, so kdnfs
// may use the numbers above for its virtual files. The root directory is kRootIno.
using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;
inline constexpr Ino kMaxStoreIno = (Ino{1} << 48) - 1;

// A time argument meaning "the current time" (like UTIME_NOW).
inline constexpr int64_t kTimeNow = std::numeric_limits<int64_t>::min();

enum class IoEngineKind : uint8_t {
  kAuto = 0,     // io_uring when the kernel allows it, else pread/pwrite (logged once);
                 // the environment variable KDN_IO_ENGINE=psync|io_uring overrides kAuto
  kIoUring = 1,  // io_uring or fail at open
  kPsync = 2,    // pread/pwrite (and fdatasync) only
};

enum class SyncPolicy : uint8_t {
  kFull = 0,  // data fdatasync'ed before every commit that publishes it, the log synced by Sync()
              // and every log_sync_interval_ms (see Durability at the top)
  kNone = 1,  // no syncs: for scratch stores only; a crash of the machine may lose or corrupt data
};

// One name removed by eviction (for kdnfs to invalidate the kernel's cache of it).
struct EvictedName {
  Ino parent = 0;
  std::string name;
  Ino ino = 0;
};

struct StoreOptions {
  bool create_if_missing = true;
  // Limit on the bytes of stored chunks (4 KiB-rounded chunk sizes). At creation, 0 means "no
  // limit but the filesystem's free space"; at open, 0 keeps the recorded limit and any other value
  // replaces it (it may be below current use: later puts then evict or fail).
  uint64_t capacity_bytes = 0;
  IoEngineKind io_engine = IoEngineKind::kAuto;
  SyncPolicy sync = SyncPolicy::kFull;
  // With kFull: the longest a returned change waits to be durable against power loss (the
  // background log sync's period). 0: every change is durable before its call returns.
  uint32_t log_sync_interval_ms = 1000;
  uint32_t queue_depth = 32;     // I/O requests in flight per operation
  uint32_t io_bytes = 1u << 20;  // bytes per I/O request (multiple of 4 KiB)
  // Called after an eviction has committed, on the thread whose put triggered it, with no store
  // lock held (it may call back into the store). Optional.
  std::function<void(const std::vector<EvictedName>&)> on_evict;
  // Where the store and its I/O engines report what they cannot return (damage found at open,
  // a fallback to pread/pwrite). Null (the default) discards; kdnfs passes its daemon log.
  std::shared_ptr<Logger> info_log;
  // Called as the migration of an old store at open copies its chunks (done of total), on the
  // opening thread. Optional: kdnctl migrate shows it on a terminal.
  std::function<void(uint64_t done, uint64_t total)> migrate_progress;
  // Tests only: wraps every I/O engine of the store (fault injection, tests/fault/). Null: none.
  std::shared_ptr<io::EngineWrapper> io_wrapper;
};

// What `df` shows.
struct StoreUsage {
  uint64_t capacity_bytes = 0;  // the limit, or used + the filesystem's free space when unlimited
  uint64_t used_bytes = 0;  // 4 KiB-rounded sizes of the chunks (and of those being written)
  uint64_t free_bytes = 0;  // what a put can still use (without evicting)
  uint64_t chunks = 0;
  uint64_t inodes = 0;  // every inode, directories included
};

// The `.kv` header fields kdnfs shows as user.kdn.* xattrs.
struct KvSummary {
  std::string model;  // model name
  Hash128 fingerprint;
  uint32_t n_layers = 0;
  uint32_t n_tokens = 0;
  uint32_t position_offset = 0;
  uint32_t chunk_tokens = 0;
  std::string codec;       // CodecSpec::Name()
  uint64_t raw_bytes = 0;  // decoded size of every block in the model dtype
  uint64_t file_bytes = 0;
  uint32_t n_prefix_hashes = 0;
};

struct ChunkInfo {
  ChunkId id;
  uint64_t size = 0;          // bytes of content
  uint64_t stored_bytes = 0;  // 4 KiB-rounded size (what the capacity counts)
  uint32_t refs = 0;          // references: inodes holding it as content + Put references
  bool evictable = false;  // only evictable references hold it (no pinned file, no kept Put)
  int64_t atime_ns = 0;    // last access (LRU), ns since the epoch
  int64_t created_ns = 0;
  std::optional<KvSummary> kv;  // set when the content is a `.kv` file
};

// Where the bytes of a chunk lie: concatenated in order they are the chunk.
// Since chunks are files of their own, a non-empty chunk has exactly one: its file, offset 0.
struct Extent {
  std::string path;     // absolute path of the chunk file
  uint64_t offset = 0;  // 4 KiB-aligned
  uint64_t length = 0;  // bytes of the chunk here (only the last extent may end off alignment)
};

struct PutOptions {
  // The reference this put returns is evictable (a cache entry): the chunk may be evicted while
  // only evictable references hold it, after which Release of it returns kNotFound.
  bool evictable = false;
};

// Attributes of an inode. `mode` is a full st_mode: type bits (S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR,
// S_IFBLK, S_IFIFO, S_IFSOCK) and permission bits (with setuid/setgid/sticky).
struct InodeAttr {
  Ino ino = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;  // directories: 2 + subdirectories
  uint64_t size = 0;   // regular: content bytes; symlink: target length; directory: 0
  int64_t atime_ns = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint64_t rdev = 0;
  ChunkId chunk;           // regular files: the committed content (zero when empty)
  bool evictable = false;  // inherited from the parent directory at creation
  bool pinned = false;
  friend bool operator==(const InodeAttr&, const InodeAttr&) = default;
};

// A node to create. Type and permission bits in `mode` (kdnfs applies the umask first).
// The most names a file may have (link(2) says EMLINK beyond, as on ext4): what follows a file's
// names (an edge publishes each to the origin, a write checks the quota of each parent) stays
// bounded whatever a user does.
inline constexpr uint32_t kMaxLinks = 65000;

struct NewNode {
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t rdev = 0;           // S_IFCHR / S_IFBLK
  std::string symlink_target;  // S_IFLNK (1..4095 bytes)
  int64_t time_ns = kTimeNow;  // atime = mtime = ctime
};

// Fields to change; unset fields stay. ctime becomes now whenever anything changes (or ctime_ns).
struct SetAttrRequest {
  std::optional<uint32_t> mode;  // permission bits only; the type bits of the inode stay
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  // Regular files only. Committed content is immutable: 0 drops the content (released), the
  // current size is accepted as a no-op, any other size is kInvalidArgument (kdnfs re-stages the
  // file and commits the truncated bytes with CommitFileContent).
  std::optional<uint64_t> size;
  std::optional<int64_t> atime_ns;  // or kTimeNow
  std::optional<int64_t> mtime_ns;  // or kTimeNow
  std::optional<int64_t> ctime_ns;  // or kTimeNow
};

// Flags of Rename, with the values of Linux's renameat2 flags.
inline constexpr uint32_t kRenameNoReplace =
    1;  // RENAME_NOREPLACE: kAlreadyExists if the target exists
inline constexpr uint32_t kRenameExchange = 2;  // RENAME_EXCHANGE: swap two existing names

// One entry of a directory listing. `cookie` resumes the listing right after this entry.
struct DirEntry {
  std::string name;
  InodeAttr attr;
  uint64_t cookie = 0;
};

// The most bytes (names and values) one inode's extended attributes may hold.
inline constexpr size_t kMaxXattrBytes = size_t{64} << 10;

enum class XattrSetMode : uint8_t { kAny = 0, kCreate = 1, kReplace = 2 };  // XATTR_CREATE/REPLACE

struct CommitOptions {
  int64_t mtime_ns = kTimeNow;  // the content's modification time (ctime becomes now)
  // Capacity the caller already holds for this content (ReserveSpace), e.g. taken as the file was
  // written. The commit takes it over whatever its outcome: it pays for the chunk's bytes, and
  // what they do not need (deduplicated content, a file that shrank) is given back.
  uint64_t reserved_bytes = 0;
  // Non-empty: an outbox note (below) written in the commit's transaction, naming the new
  // content's chunk (so that chunk is not evicted until the note is removed).
  std::string outbox_note;
};

// The outbox: durable notes about changes, for a follower outside the store (kdnfs's origin
// uploader, fs/edge/). A note is written in the same transaction as the change it describes, so
// a crash (even kill -9 right after the change returned) keeps both or neither, and the follower
// finds every change it has not handled yet after a restart. A note that names a chunk keeps that
// chunk from being evicted while the note exists (its bytes have not reached the follower's
// destination yet); deleting the chunk's last reference still deletes it. Notes are read in the
// order they were written and removed by the follower once handled.
struct OutboxNote {
  uint64_t seq = 0;  // order of writing; never reused
  ChunkId chunk;     // zero: the note names no chunk
  std::string body;  // the follower's own encoding; the store does not look inside
};

// A `.kv` chunk whose chained prefix hash at index `index` equals the one asked for: its first
// min((index + 1) * chunk_tokens, n_tokens) tokens are the prefix.
struct PrefixMatch {
  ChunkId chunk;
  uint32_t index = 0;
  uint32_t n_tokens = 0;  // tokens of the whole chunk
  Ino ino = 0;            // a regular file holding the chunk (0 when only Put references hold it)
};

// A `.kv` file directly in a directory whose content's prefix chain, as the index records it,
// holds the hash asked for (index `index`). The index is only a hint: a caller that hands the
// file out checks the chain against the file's own tokens.
struct DirPrefixMatch {
  std::string name;  // the file's name in the directory
  InodeAttr attr;    // the file (a regular file)
  uint32_t index = 0;
};

// Counters for /.kdn/stats. Byte and count totals come from the database (exact, since open or
// creation as noted); operation counters and latencies count since this Store was opened.
struct StoreStats {
  std::string io_engine;  // "io_uring" or "psync"
  uint64_t files = 0;     // regular files (inodes), hard links counted once
  uint64_t directories = 0;
  uint64_t chunks = 0;
  uint64_t logical_bytes = 0;    // sum of regular file sizes
  uint64_t stored_bytes = 0;     // sum of distinct chunk sizes
  uint64_t allocated_bytes = 0;  // 4 KiB-rounded chunk sizes
  double dedup_ratio = 1.0;      // logical / stored (1 when empty)
  uint64_t kv_chunks = 0;
  uint64_t kv_raw_bytes = 0;       // decoded size of the `.kv` chunks
  uint64_t kv_stored_bytes = 0;    // their encoded size
  double compression_ratio = 1.0;  // kv_raw / kv_stored (1 when none)
  // Since open:
  uint64_t puts = 0;
  uint64_t put_bytes = 0;
  uint64_t dedup_hits = 0;  // puts whose bytes were already stored
  uint64_t reads = 0;       // Get calls that succeeded
  uint64_t read_bytes = 0;
  uint64_t prefix_lookups = 0;
  uint64_t prefix_hits = 0;
  uint64_t evictions = 0;  // chunks evicted
  uint64_t evicted_bytes = 0;
  uint64_t errors = 0;               // I/O errors and checksum failures seen by any operation
  uint64_t log_syncs = 0;            // syncs of the metadata log (Sync, background, interval 0)
  uint64_t unsynced_changes = 0;     // committed transactions not yet durable (now)
  uint64_t read_latency_p50_ns = 0;  // Get latency percentiles (0 before the first read)
  uint64_t read_latency_p90_ns = 0;
  uint64_t read_latency_p99_ns = 0;
  uint64_t read_latency_max_ns = 0;
  // The same latencies as a histogram: read_latency_buckets[i] Gets took at most
  // 2^(kReadLatencyFirstPow2 + i) - 1 ns; the last entry counts every Get (also
  // read_latency_count). read_latency_sum_ns is their total time.
  static constexpr int kReadLatencyFirstPow2 = 10;  // 1.023 us
  static constexpr int kReadLatencyLastPow2 = 34;   // 17.2 s
  std::vector<uint64_t> read_latency_buckets;
  uint64_t read_latency_count = 0;
  uint64_t read_latency_sum_ns = 0;
};

struct FsckOptions {
  bool verify_data = true;  // read every chunk: whole-chunk hash, block checksums, `.kv` checksums
  std::shared_ptr<Logger> info_log;  // for Store::Fsck(dir): StoreOptions::info_log of the open
  // Called as the chunks' bytes are verified (done of total), on the checking thread. Optional:
  // kdnctl fsck shows it on a terminal.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct FsckReport {
  uint64_t chunks = 0;
  uint64_t inodes = 0;
  uint64_t dentries = 0;
  uint64_t bytes_verified = 0;
  std::vector<std::string> problems;  // one line each, empty when the store is sound
  std::vector<std::string> fixed;     // fixed when the store was opened (Store::OpenWarnings)
  bool clean() const { return problems.empty(); }
};

class Store {
 public:
  // Opens (or creates, when allowed and `dir` is empty or missing) the store in `dir`, takes its
  // lock (kBusy when another process holds it), reclaims orphans (unlinked inodes left by a crash)
  // and removes stray staging and chunk files.
  static Result<std::unique_ptr<Store>> Open(const std::string& dir,
                                             const StoreOptions& options = {});
  // Opens the store and checks it (see Fsck below). kBusy when it is in use.
  static Result<FsckReport> Fsck(const std::string& dir, const FsckOptions& options = {});

  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // What Open found and fixed on the way, one line each, for the caller to log (the library
  // prints nothing): modes wider than owner-only (a store only its owner may read: directories
  // 0700, files 0600, fixed at open).
  const std::vector<std::string>& OpenWarnings() const;

  const std::string& dir() const;   // absolute path
  std::string staging_dir() const;  // dir()/staging
  // A fresh, unused path inside staging_dir() for kdnfs to create (O_CREAT|O_EXCL) and fill.
  std::string NewStagingPath();
  // The same for the first content of `ino`, a regular file that has none yet. Should the process
  // die before that content commits, the next Open removes `ino` with every name it has if it
  // still has no content: a crash leaves no empty file that was only the first step of a copy.
  std::string NewStagingPath(Ino first_content_of);
  // Where kdnfs records the inodes whose first content it holds in memory rather than in a
  // staging file (a file inside staging_dir(), removed at Open like the rest): an array of
  // 8-byte little-endian inode numbers, 0 for a free slot. Open treats each inode named there as
  // it treats one named by NewStagingPath(Ino): removed if it still has no content.
  std::string FirstContentSlotsPath() const;
  StoreUsage Usage() const;

  // Capacity held for content that is still being written (kdnfs's staged files), so that a write
  // that would pass the capacity fails at write time rather than at the commit. Evicts as a put
  // does (unless `evict` is false); kNoSpace when the space is not there. Given back with
  // ReleaseSpace, or handed to the commit of that content (CommitOptions::reserved_bytes).
  Status ReserveSpace(uint64_t bytes, bool evict = true);
  void ReleaseSpace(uint64_t bytes);

  // Bytes counted for quotas (kdnfs's -o user_quota and user.kdn.quota): the sizes of regular
  // files, each rounded up to 4 KiB, as committed. FileBytesOfOwner: every file `uid` owns (named
  // or still open). FileBytesInDir: the files named directly in `dir` (a file with two names there
  // counts twice).
  Result<uint64_t> FileBytesOfOwner(uint32_t uid);
  Result<uint64_t> FileBytesInDir(Ino dir);
  // The directories that hold a name of `ino` (none for an unlinked file).
  Result<std::vector<Ino>> ParentsOf(Ino ino);
  StoreStats Stats() const;
  // A durability barrier: every change that returned before this call is durable against power
  // loss when it returns (one fdatasync of the log, shared by concurrent callers; nothing when
  // everything is already durable). A no-op with SyncPolicy::kNone.
  Status Sync();

  // ---- Chunks.

  // Stores `bytes` (or takes one more reference when they are already stored) and returns the id
  // with one reference held by the caller.
  Result<ChunkId> Put(std::span<const std::byte> bytes, const PutOptions& options = {});
  // Reads up to out.size() bytes of the chunk from `offset`, verified; returns the bytes read
  // (fewer at the end of the chunk, 0 at or past it). Any buffer works; a 4 KiB-aligned buffer and
  // offset avoid a copy. Counts as an access for LRU.
  Result<size_t> Get(const ChunkId& id, uint64_t offset, std::span<std::byte> out);
  Result<ChunkInfo> StatChunk(const ChunkId& id);
  // Drops one Put reference; the last one deletes the chunk and unlinks its file.
  Status Release(const ChunkId& id);
  Result<std::vector<Extent>> Extents(const ChunkId& id);
  // A new read-only descriptor (O_RDONLY|O_CLOEXEC|O_NOFOLLOW; the caller closes it) of a regular
  // file that holds exactly the chunk's bytes, chunk offset N at file offset N, size = the chunk's
  // size: what FUSE passthrough needs as a backing file. The file stays readable and unchanged
  // for as long as the descriptor is open, even if the chunk is deleted meanwhile (it is then
  // only unlinked). Reads through it are not checked against the block checksums (Get is).
  // kNotFound for an unknown chunk; kInvalidArgument for the empty chunk (it has no file; an
  // empty regular file has no chunk at all).
  Result<int> OpenChunkForRead(const ChunkId& id);
  // Marks an access for LRU (kept in memory, written lazily; a crash may forget recent touches).
  void Touch(const ChunkId& id);
  // Reads the whole chunk: its hash must equal its id; `.kv` content must pass every checksum.
  Status VerifyChunk(const ChunkId& id);

  // ---- The namespace. Each call is one atomic change. Names are 1..255 bytes without '/' or NUL,
  // and not "." or "..".

  Result<InodeAttr> GetAttr(Ino ino);
  Result<InodeAttr> Lookup(Ino parent, std::string_view name);
  // Creates a regular file, directory, symlink or device/fifo/socket node named `name` in `parent`.
  // It inherits the parent's evictable flag. A non-empty `outbox_note` is written in the same
  // transaction (see OutboxNote); so for Link and Rmdir.
  Result<InodeAttr> MakeNode(Ino parent, std::string_view name, const NewNode& node,
                             std::string_view outbox_note = {});
  Result<std::string> ReadLink(Ino ino);
  // A new name for a non-directory (kPermissionDenied/EPERM for directories; EMLINK when it has
  // kMaxLinks names already).
  Result<InodeAttr> Link(Ino ino, Ino new_parent, std::string_view new_name,
                         std::string_view outbox_note = {});
  // Removes a non-directory name; returns the inode as it is afterwards. The inode and its content
  // are reclaimed at once when nlink drops to 0 and it is not open, else at its last CloseInode.
  // A non-empty `outbox_note` is written in the same transaction (see OutboxNote).
  Result<InodeAttr> Unlink(Ino parent, std::string_view name, std::string_view outbox_note = {});
  // Removes every name of `ino`, like Unlink of each, if it is a regular file without content
  // (a new file whose first content was refused); otherwise changes nothing. Returns the names
  // removed.
  Result<std::vector<EvictedName>> RemoveIfEmpty(Ino ino);
  // Removes an empty directory (ENOTEMPTY status with sys_errno() ENOTEMPTY when it is not).
  Status Rmdir(Ino parent, std::string_view name, std::string_view outbox_note = {});
  // Atomic rename. Replaces an existing target (a file by a file, a directory by an empty
  // directory), or with kRenameNoReplace/kRenameExchange as renameat2. Moving a directory into its
  // own subtree is refused (EINVAL).
  // A non-empty `outbox_note` is written in the same transaction when the rename changes
  // anything (see OutboxNote).
  Status Rename(Ino parent, std::string_view name, Ino new_parent, std::string_view new_name,
                uint32_t flags = 0, std::string_view outbox_note = {});
  // A non-empty `outbox_note` is written in the same transaction (see OutboxNote); so for
  // SetXattr and RemoveXattr.
  Result<InodeAttr> SetAttr(Ino ino, const SetAttrRequest& request,
                            std::string_view outbox_note = {});
  // Up to `max_entries` entries after `cookie` (0 starts the listing with "." and ".."). Cookies
  // are stable: entries added or removed meanwhile do not shift the others.
  Result<std::vector<DirEntry>> ReadDir(Ino dir, uint64_t cookie, size_t max_entries);
  // A path of the inode from the root ("/a/b.kv"), through any one of its names.
  Result<std::string> PathOf(Ino ino);
  // A path through each of its names (a file with hard links has several), at most `max_paths`,
  // in the order the names were made; none for an unlinked file.
  Result<std::vector<std::string>> PathsOf(Ino ino, size_t max_paths = 64);

  // Extended attributes, stored as given (kdnfs decides which names users may touch). A missing
  // attribute is kNotFound (kdnfs answers ENODATA). Values up to 64 KiB (E2BIG), names up to 255
  // bytes (ERANGE), and the names and values of one inode's attributes up to kMaxXattrBytes in all
  // (ENOSPC, as ext4 answers when an inode's attribute block is full). Their bytes (name + value)
  // count against the capacity: a new or longer attribute that does not fit is ENOSPC (attributes
  // evict nothing).
  Result<std::string> GetXattr(Ino ino, std::string_view name);
  Status SetXattr(Ino ino, std::string_view name, std::string_view value,
                  XattrSetMode mode = XattrSetMode::kAny, std::string_view outbox_note = {});
  Result<std::vector<std::string>> ListXattr(Ino ino);
  Status RemoveXattr(Ino ino, std::string_view name, std::string_view outbox_note = {});

  // user.kdn.evictable (directories pass it on to entries created later; files make their content
  // evictable) and user.kdn.pin (files: their content is never evicted).
  Status SetEvictable(Ino ino, bool evictable);
  Status SetPinned(Ino ino, bool pinned);

  // Open handles (counted in memory): an unlinked inode keeps its content while open and is
  // reclaimed at its last close; after a crash, on the next Open. Eviction skips open files.
  Status OpenInode(Ino ino);
  Status CloseInode(Ino ino);

  // Publishes new content for a regular file in one transaction with the chunk: the staged file is
  // validated (`.kv` content must pass VerifyKv: kInvalidArgument otherwise, and nothing changes), stored (deduplicated), and becomes the inode's content; the old content is
  // released. The staged file is removed on success and left in place on failure.
  Result<InodeAttr> CommitFileContent(Ino ino, const std::string& staged_path,
                                      const CommitOptions& options = {});
  // The same for a file in this store's staging directory (NewStagingPath) whose content id the
  // caller computed from that very file, which nothing else writes (an edge's verified fetch).
  // The store trusts the id, and nothing else: `.kv` content must still pass VerifyKv, and the
  // read checksums are summed from the file. New content is not copied: the file is synced and
  // renamed into place as the chunk file. On success the staged file is gone (renamed or
  // removed); on failure it may be either there or gone, and the caller removes what is left.
  Result<InodeAttr> CommitHashedFile(Ino ino, const std::string& staged_path, const ChunkId& id,
                                     const CommitOptions& options = {});
  // The same for content staged in memory (small files): no file to read or remove.
  Result<InodeAttr> CommitFileContent(Ino ino, std::span<const std::byte> content,
                                      const CommitOptions& options = {});

  // `.kv` chunks whose prefix chain holds `hash` (counted as a prefix lookup, and a hit when
  // found).
  Result<std::vector<PrefixMatch>> LookupPrefix(const Hash128& hash, size_t max_results = 16);
  // Regular files named directly in `dir`, owned by one of `owners` (1..kMaxPrefixOwners), whose
  // content's prefix chain holds `hash` (at most max_results, by name; counted as a prefix lookup).
  // The owner filter is in the query so that files of other owners cannot crowd the trusted ones
  // out of the results.
  static constexpr size_t kMaxPrefixOwners = 65;  // a set's owner and 64 trusted uids
  Result<std::vector<DirPrefixMatch>> LookupPrefixInDir(Ino dir, const Hash128& hash,
                                                        std::span<const uint32_t> owners,
                                                        size_t max_results = 16);
  // Regular files whose content is `chunk`.
  Result<std::vector<Ino>> InodesWithChunk(const ChunkId& chunk, size_t max_results = 16);

  // ---- The outbox (see OutboxNote).

  // Up to `max_notes` notes with seq > `after_seq`, in order.
  Result<std::vector<OutboxNote>> ReadOutbox(uint64_t after_seq, size_t max_notes);
  // Removes a handled note (a note already removed is OK).
  Status RemoveOutboxNote(uint64_t seq);
  struct OutboxState {
    uint64_t notes = 0;      // not removed yet
    uint64_t first_seq = 0;  // the oldest of them (0 when none)
    uint64_t last_seq = 0;   // the newest of them (0 when none)
  };
  Result<OutboxState> GetOutboxState();
  // Whether a note names `chunk` (its bytes have not reached the follower's destination yet).
  Result<bool> OutboxNamesChunk(const ChunkId& chunk);

  // ---- Checks.

  // Checks everything: the database, every chunk's file (present, its size, no stray files),
  // reference counts, the namespace's links, and (verify_data) every chunk's bytes. Writers wait
  // while the metadata is checked (not while the bytes are read); readers never wait.
  Result<FsckReport> Fsck(const FsckOptions& options = {});

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kdn

#endif  // KDN_STORE_H_
