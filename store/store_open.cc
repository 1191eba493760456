// Opening and closing a store, recovery (stray chunk files, orphans, staging),
// transactions' after-commit effects, usage and statistics.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <random>

#include "iouring/aligned_buffer.h"
#include "store/clock.h"
#include "store/migrate_v1.h"
#include "store/private_modes.h"
#include "store/schema.h"
#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::NowNs;
using store::Stmt;

namespace {

// In a staging file's name: the file holds the first content of the inode whose number follows.
constexpr const char* kFirstContentTag = ".first-";
// In staging/: kdnfs's record of the new files whose first content it holds in memory.
constexpr const char* kFirstContentSlotsName = "first-content.slots";

// The inodes named in a first-content slots file (Store::FirstContentSlotsPath): its 8-byte
// little-endian records, zero ones skipped. A trailing partial record (a write cut short) is
// ignored.
void ReadFirstContentSlots(const std::string& path, std::vector<Ino>* out) {
  UniqueFd fd = OpenFd(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!fd.valid()) return;
  std::vector<unsigned char> bytes;
  unsigned char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bytes.insert(bytes.end(), buffer, buffer + n);
  }
  for (size_t at = 0; at + 8 <= bytes.size(); at += 8) {
    Ino ino = 0;
    for (int b = 7; b >= 0; --b) ino = (ino << 8) | bytes[at + static_cast<size_t>(b)];
    if (ino != 0) out->push_back(ino);
  }
}

bool IsStoreEntry(std::string_view name) {
  return name == "." || name == ".." || name == "LOCK" || name == "chunks" || name == "seg" ||
         name == "staging" ||
         name == "meta.db" || name == "meta.db-wal" || name == "meta.db-shm" ||
         name == "meta.db-journal";
}

// Whether `dir` holds something other than a store's own files (so we must not create one there).
Result<bool> HasForeignEntries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno("listing " + dir, errno);
  bool foreign = false;
  while (dirent* e = ::readdir(d)) {
    if (!IsStoreEntry(e->d_name)) foreign = true;
  }
  ::closedir(d);
  return foreign;
}

Status TakeLock(const std::string& dir, UniqueFd* fd_out) {
  std::string path = dir + "/LOCK";
  UniqueFd fd = OpenFd(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, store::kFileMode);
  if (!fd.valid()) return Status::FromErrno("opening " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char pid[32] = {};
    ssize_t n = ::pread(fd.get(), pid, sizeof(pid) - 1, 0);
    if (err == EWOULDBLOCK) {
      std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string("?");
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return Status::Busy("store " + dir + " is in use by another process (pid " + holder +
                          "); only one process may open a store");
    }
    return Status::FromErrno("locking " + path, err);
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) == 0) {
    (void)!::pwrite(fd.get(), me.data(), me.size(), 0);
  }
  *fd_out = std::move(fd);
  return Status::OK();
}

}  // namespace

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() = default;

Store::Impl::~Impl() {
  txn.StopLogSyncer();
  // Recent LRU touches are worth keeping; failing to is harmless.
  if (txn.is_open()) {
    {
      std::lock_guard lock(txn.mu());
      if (auto t = store::WriteTxn::Begin(txn.writer()); t.ok()) {
        if (chunks.FlushTouched(txn.writer()).ok() && t->Commit().ok()) txn.NoteCommit();
      }
    }
    // Everything committed is durable when the store is closed (SQLite's closing checkpoint
    // would sync it too, but only when no other process reads the database).
    (void)txn.SyncAll();
  }
  chunks.Close();  // chunk files held open by cached layouts, and the engines
  readers.reset();
  txn.CloseWriter();
  lock_fd.reset();  // last: the store stays locked until everything above is closed
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir, const StoreOptions& options) {
  auto impl = std::make_unique<Impl>();
  KDN_RETURN_IF_ERROR(impl->OpenAll(dir, options));
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Status Store::Impl::OpenAll(const std::string& path, const StoreOptions& opts) {
  options = opts;
  sync_full = opts.sync == SyncPolicy::kFull;
  if (opts.io_bytes < io::kDirectAlign || opts.io_bytes % io::kDirectAlign != 0 ||
      opts.io_bytes > (64u << 20)) {
    return Status::InvalidArgument("io_bytes must be a multiple of 4096, at most 64 MiB");
  }
  if (opts.queue_depth == 0 || opts.queue_depth > 1024) {
    return Status::InvalidArgument("queue_depth must be 1..1024");
  }
  RegisterWithTxn();

  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT || !opts.create_if_missing) {
      return Status::FromErrno("store directory " + path, errno);
    }
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return Status::FromErrno("creating " + path, ec.value());
    if (::chmod(path.c_str(), store::kDirMode) != 0) return Status::FromErrno(path, errno);
  } else if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(path + " is not a directory");
  }
  char real[PATH_MAX];
  if (::realpath(path.c_str(), real) == nullptr) return Status::FromErrno(path, errno);
  dir = real;

  const std::string db_path = dir + "/meta.db";
  const bool exists = ::access(db_path.c_str(), F_OK) == 0;
  if (!exists) {
    if (!opts.create_if_missing) return Status::NotFound("no store in " + dir + " (no meta.db)");
    KDN_ASSIGN_OR_RETURN(bool foreign, HasForeignEntries(dir));
    if (foreign) {
      return Status::InvalidArgument(dir +
                                     " is not empty and holds no store: refusing to create "
                                     "one there");
    }
  }
  KDN_RETURN_IF_ERROR(TakeLock(dir, &lock_fd));
  // Before SQLite opens it: its -wal and -shm files take the database file's mode.
  KDN_RETURN_IF_ERROR(store::RestrictModes(dir, &open_warnings));
  if (!exists) {
    UniqueFd db_fd = OpenFd(db_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                            store::kFileMode);
    if (!db_fd.valid()) return Status::FromErrno("creating " + db_path, errno);
  }

  store::TxnLog::Options txn_options;
  txn_options.dir = dir;
  txn_options.sync_full = sync_full;
  txn_options.log_sync_interval_ms = opts.log_sync_interval_ms;
  txn_options.info_log = opts.info_log;
  txn_options.errors = chunks.error_counter();
  txn_options.opens_mu = &opens.mu();
  KDN_RETURN_IF_ERROR(txn.Open(txn_options, !exists));
  store::Db& writer = txn.writer();  // alone here: nothing else runs until the open is done
  KDN_RETURN_IF_ERROR(MigrateIfOld());
  KDN_RETURN_IF_ERROR(store::InitSchema(writer, ::geteuid(), ::getegid(), NowNs()));
  // A -wal or -shm file left with a wider mode by an older version was opened as it was.
  KDN_RETURN_IF_ERROR(store::RestrictModes(dir, &open_warnings));
  readers = std::make_unique<store::DbPool>(db_path);

  // What the chunk store is handed once the database can say its capacity, before the first
  // transaction that may touch chunks (recovery, below).
  store::ChunkStoreSetup chunk_setup;
  chunk_setup.dir = dir;
  chunk_setup.sync_full = sync_full;
  chunk_setup.shape = store::IoShape{opts.queue_depth, opts.io_bytes};
  chunk_setup.readers = readers.get();
  chunk_setup.release_names = ReleaseNamesForChunks();
  chunk_setup.on_evict = opts.on_evict;
  {
    std::lock_guard lock(txn.mu());
    KDN_ASSIGN_OR_RETURN(store::WriteTxn t, store::WriteTxn::Begin(writer));
    if (opts.capacity_bytes != 0) {
      KDN_RETURN_IF_ERROR(
          store::SetMetaInt(writer, "capacity", static_cast<int64_t>(opts.capacity_bytes)));
    }
    KDN_ASSIGN_OR_RETURN(int64_t cap, store::GetMetaInt(writer, "capacity", 0));
    chunk_setup.capacity = static_cast<uint64_t>(cap);
    KDN_RETURN_IF_ERROR(t.Commit());
    // This and InitSchema's transaction: made durable by the first log sync.
    txn.NoteCommit();
  }

  io::EngineOptions& eo = chunk_setup.engines;
  eo.kind = static_cast<io::EngineKind>(opts.io_engine);
  eo.logger = opts.info_log;
  eo.wrapper = opts.io_wrapper;
  eo.queue_depth = opts.queue_depth;
  eo.buffer_count = opts.queue_depth;
  eo.buffer_bytes = 256 * 1024;  // two checksum blocks: bounce space for unaligned callers
  KDN_RETURN_IF_ERROR(chunks.Open(std::move(chunk_setup)));

  KDN_RETURN_IF_ERROR(CleanStaging());
  KDN_RETURN_IF_ERROR(ReclaimOrphans());
  KDN_RETURN_IF_ERROR(RemoveStrayChunkFiles());

  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT (SELECT count(*) FROM chunks), "
                                           "(SELECT count(*) FROM inodes)"));
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (row) {
    chunks.SetChunkCount(q.Int(0));
    inode_count = q.Int(1);
  }
  txn.StartLogSyncer();
  return Status::OK();
}

void Store::Impl::RegisterWithTxn() {
  store::TxnHooks hooks = chunks.TxnHooksForChunks();
  // A committed change's effects: the namespace's count, then the chunk store's part.
  hooks.apply = [this](store::TxnEffects& fx) {
    inode_count += fx.inode_delta;
    chunks.ApplyEffects(fx);
  };
  txn.SetHooks(std::move(hooks));
}

Status Store::Impl::MigrateIfOld() {
  int64_t version = 0;
  Db& writer = txn.writer();
  {
    KDN_ASSIGN_OR_RETURN(
        Stmt q, writer.Prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"));
    KDN_ASSIGN_OR_RETURN(bool have, q.Step());
    if (!have) return Status::OK();  // a new store
  }
  KDN_ASSIGN_OR_RETURN(version, store::GetMetaInt(writer, "schema_version", 0));
  struct stat st;
  const bool have_segments = ::lstat((dir + "/seg").c_str(), &st) == 0;
  if (version == 1) {
    // Before the chunk store opens (it is handed the capacity, a row of the migrated schema): the
    // migration installs chunk files through chunk files of its own, in the same directory.
    store::ChunkFiles files;
    KDN_RETURN_IF_ERROR(files.Open(dir, sync_full));
    KDN_RETURN_IF_ERROR(store::MigrateV1(writer, dir, files, sync_full, options.migrate_progress)
                            .WithContext("migrating the version 1 store in " + dir));
    open_warnings.push_back(dir + ": migrated from version 1 (segment files) to version " +
                            std::to_string(store::kSchemaVersion) + " (a file per chunk)");
  } else if (version == store::kSchemaVersion && have_segments) {
    KDN_RETURN_IF_ERROR(store::RemoveV1Segments(dir));  // the end of an interrupted migration
  }
  return Status::OK();
}

Status Store::Impl::RemoveStrayChunkFiles() {
  // The chunk store's part (store::ChunkStore::RemoveStrayFiles) is the whole of recovery for
  // chunk data; the used space is the committed chunks' and the attributes'.
  KDN_ASSIGN_OR_RETURN(uint64_t used, chunks.RemoveStrayFiles());
  {
    // Extended attributes count against the capacity too (store.h).
    KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, readers->Acquire());
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT COALESCE(SUM(length(name) + length(value)), "
                                             "0) FROM xattrs"));
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) used += q.U64(0);
  }
  chunks.SetUsedBytes(used);
  for (const std::string& p : open_problems)
    Log(options.info_log, LogLevel::kWarning, "store " + dir + ": " + p);
  return Status::OK();
}

Status Store::Impl::ReclaimOrphans() {
  // Inodes with no name left were open when the last process stopped: nobody holds them now.
  return txn.Write(true, [&](Db& db, store::TxnEffects& fx) -> Status {
    std::vector<Ino> orphans;
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT ino FROM inodes WHERE nlink = 0"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        orphans.push_back(q.U64(0));
      }
    }
    for (Ino ino : orphans) KDN_RETURN_IF_ERROR(DropInode(db, ino, fx));
    return Status::OK();
  });
}

Status Store::Impl::CleanStaging() {
  std::string staging = dir + "/staging";
  if (::mkdir(staging.c_str(), store::kDirMode) != 0 && errno != EEXIST) {
    return Status::FromErrno("creating " + staging, errno);
  }
  // Staged files belong to writes that never committed: their content was never published. A
  // file whose first content one of them held is removed too, if it still has none.
  std::vector<Ino> unborn;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(staging, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == kFirstContentSlotsName) ReadFirstContentSlots(entry.path().string(), &unborn);
    const size_t at = name.find(kFirstContentTag);
    if (at != std::string::npos) {
      const char* begin = name.data() + at + std::strlen(kFirstContentTag);
      Ino ino = 0;
      auto [end, err] = std::from_chars(begin, name.data() + name.size(), ino);
      if (err == std::errc() && std::string_view(end) == ".tmp" && ino != 0) {
        unborn.push_back(ino);
      }
    }
    std::filesystem::remove_all(entry.path(), ec);
  }
  if (unborn.empty()) return Status::OK();
  return txn.Write(true, [&](Db& db, store::TxnEffects& fx) -> Status {
    std::vector<EvictedName> removed;
    for (Ino ino : unborn) KDN_RETURN_IF_ERROR(RemoveEmptyFile(db, ino, fx, &removed));
    return Status::OK();
  });
}

Status Store::Sync() {
  return impl_->txn.SyncAll();
}

const std::vector<std::string>& Store::OpenWarnings() const {
  return impl_->open_warnings;
}

const std::string& Store::dir() const {
  return impl_->dir;
}

std::string Store::staging_dir() const {
  return impl_->dir + "/staging";
}

std::string Store::FirstContentSlotsPath() const {
  return impl_->dir + "/staging/" + kFirstContentSlotsName;
}

std::string Store::NewStagingPath(Ino first_content_of) {
  std::string path = NewStagingPath();
  path.resize(path.size() - 4);  // ".tmp"
  return path + kFirstContentTag + std::to_string(first_content_of) + ".tmp";
}

std::string Store::NewStagingPath() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char name[64];
  std::snprintf(name, sizeof(name), "/staging/%llu-%016llx.tmp",
                static_cast<unsigned long long>(++impl_->staging_seq),
                static_cast<unsigned long long>(rng()));
  return impl_->dir + name;
}

StoreUsage Store::Usage() const {
  StoreUsage u;
  u.used_bytes = impl_->chunks.BytesInUse();
  uint64_t fs_free = 0;
  struct statvfs vfs;
  if (::statvfs(impl_->dir.c_str(), &vfs) == 0) fs_free = uint64_t{vfs.f_bavail} * vfs.f_frsize;
  const uint64_t cap = impl_->chunks.capacity();
  if (cap != 0) {
    u.capacity_bytes = cap;
    u.free_bytes = std::min(cap > u.used_bytes ? cap - u.used_bytes : 0, fs_free);
  } else {
    u.free_bytes = fs_free;
    u.capacity_bytes = u.used_bytes + u.free_bytes;
  }
  u.chunks = static_cast<uint64_t>(std::max<int64_t>(0, impl_->chunks.chunk_count()));
  u.inodes = static_cast<uint64_t>(std::max<int64_t>(0, impl_->inode_count.load()));
  return u;
}

StoreStats Store::Stats() const {
  StoreStats s;
  s.io_engine = std::string(io::EngineKindName(impl_->chunks.engine_kind()));
  if (auto db = impl_->readers->Acquire(); db.ok()) {
    auto q = (*db)->Prepare(
        "SELECT (SELECT count(*) FROM inodes WHERE (mode & 61440) = 32768 AND nlink > 0), "
        "(SELECT coalesce(sum(size), 0) FROM inodes WHERE (mode & 61440) = 32768 AND nlink > 0), "
        "(SELECT count(*) FROM inodes WHERE (mode & 61440) = 16384), "
        "(SELECT count(*) FROM chunks), (SELECT coalesce(sum(size), 0) FROM chunks), "
        "(SELECT coalesce(sum(stored), 0) FROM chunks), (SELECT count(*) FROM kv_meta), "
        "(SELECT coalesce(sum(raw_bytes), 0) FROM kv_meta), "
        "(SELECT coalesce(sum(file_bytes), 0) FROM kv_meta)");
    if (q.ok()) {
      if (auto row = q->Step(); row.ok() && *row) {
        s.files = q->U64(0);
        s.logical_bytes = q->U64(1);
        s.directories = q->U64(2);
        s.chunks = q->U64(3);
        s.stored_bytes = q->U64(4);
        s.allocated_bytes = q->U64(5);
        s.kv_chunks = q->U64(6);
        s.kv_raw_bytes = q->U64(7);
        s.kv_stored_bytes = q->U64(8);
      }
    }
  }
  s.dedup_ratio = s.stored_bytes > 0
                      ? static_cast<double>(s.logical_bytes) / static_cast<double>(s.stored_bytes)
                      : 1.0;
  s.compression_ratio = s.kv_stored_bytes > 0 ? static_cast<double>(s.kv_raw_bytes) /
                                                    static_cast<double>(s.kv_stored_bytes)
                                              : 1.0;
  const store::Counters& c = impl_->chunks.counters();
  s.puts = c.puts;
  s.put_bytes = c.put_bytes;
  s.dedup_hits = c.dedup_hits;
  s.reads = c.reads;
  s.read_bytes = c.read_bytes;
  s.prefix_lookups = c.prefix_lookups;
  s.prefix_hits = c.prefix_hits;
  s.evictions = c.evictions;
  s.evicted_bytes = c.evicted_bytes;
  s.errors = c.errors;
  s.log_syncs = impl_->txn.log_syncs();
  s.unsynced_changes = impl_->txn.unsynced();
  const store::LatencyHistogram& latency = impl_->chunks.read_latency();
  s.read_latency_p50_ns = latency.Percentile(0.50);
  s.read_latency_p90_ns = latency.Percentile(0.90);
  s.read_latency_p99_ns = latency.Percentile(0.99);
  s.read_latency_max_ns = latency.max();
  s.read_latency_buckets = latency.CumulativeAtPowersOfTwo(StoreStats::kReadLatencyFirstPow2,
                                                           StoreStats::kReadLatencyLastPow2);
  s.read_latency_count = s.read_latency_buckets.back();
  s.read_latency_sum_ns = latency.sum();
  return s;
}

}  // namespace kdn
