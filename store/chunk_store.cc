// The chunk store (store/chunk_store.h), store::ChunkStore's methods: open, recovery of chunk
// files and close; hashing and validation, space reservation and eviction, writing, publishing,
// reference counting, verified reads; and kdn::Store's chunk calls, which forward to them.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>
#include <unordered_set>

#include "iouring/aligned_buffer.h"
#include "kdn/format.h"
#include "store/byte_sources.h"
#include "store/chunk_store.h"
#include "store/clock.h"
#include "store/store_impl.h"

namespace kdn {

using store::ChunkLayout;
using store::ChunkStore;
using store::Db;
using store::NowNs;
using store::PreparedChunk;
using store::RefKind;
using store::Stmt;
using store::TxnEffects;

namespace {

uint64_t MonoNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

Status NotFoundChunk(const ChunkId& id) {
  return Status::NotFound("chunk " + id.ToHex() + " is not in the store");
}

// Invalid `.kv` content is the caller's error (kdnfs answers EINVAL at close).
Status KvRefused(const Status& s) {
  if (s.code() == Code::kInvalidArgument || s.code() == Code::kUnsupported) return s;
  if (s.code() == Code::kCorruption || s.code() == Code::kModelMismatch) {
    return Status::InvalidArgument("invalid .kv content: " + s.message());
  }
  return s;
}

// A chunk's bytes through the store, for the format library's reader (verification).
class ChunkByteSource final : public ByteSource {
 public:
  ChunkByteSource(store::EnginePool& engines, const store::IoShape& shape,
                  std::shared_ptr<const ChunkLayout> layout)
      : engines_(engines), shape_(shape), layout_(std::move(layout)) {}
  uint64_t size() const override { return layout_->size; }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    if (offset > layout_->size || out.size() > layout_->size - offset) {
      return Status::Corruption("read beyond the end of chunk " + layout_->id.ToHex());
    }
    KDN_ASSIGN_OR_RETURN(store::EnginePool::Lease engine, engines_.Acquire());
    return store::ReadChunk(*engine, *layout_, offset, out, shape_);
  }

 private:
  store::EnginePool& engines_;
  const store::IoShape& shape_;
  std::shared_ptr<const ChunkLayout> layout_;
};

// Whether `id` has a row in the transaction (or snapshot) of `db`.
Result<bool> StoredIn(Db& db, const ChunkId& id) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT 1 FROM chunks WHERE id = ?"));
  q.BindId(1, id);
  return q.Step();
}

}  // namespace

// ---- open, recovery and close
// --------------------------------------------------------------------------------------

Status ChunkStore::Open(store::ChunkStoreSetup setup) {
  shape_ = setup.shape;
  readers_ = setup.readers;
  release_names_ = std::move(setup.release_names);
  on_evict_ = std::move(setup.on_evict);
  space_.set_capacity(setup.capacity);
  KDN_RETURN_IF_ERROR(files_.Open(setup.dir, setup.sync_full));
  engines_ = std::make_unique<store::EnginePool>(setup.engines);
  // An engine now, so that a refused io_uring (when asked for explicitly) fails the open.
  KDN_ASSIGN_OR_RETURN(store::EnginePool::Lease lease, engines_->Acquire());
  return Status::OK();
}

Result<uint64_t> ChunkStore::RemoveStrayFiles() {
  // A file no committed row names was never published, or its chunk was deleted: either way
  // nobody can reach it.
  std::unordered_set<std::string> known;
  uint64_t used = 0;
  {
    KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, readers_->Acquire());
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT id, stored FROM chunks"));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      known.insert(q.Chunk(0).ToHex());
      used += q.U64(1);
    }
  }
  KDN_RETURN_IF_ERROR(
      files_.List([&](const std::optional<ChunkId>& id, const std::string& path) -> Status {
        if (id && known.count(id->ToHex()) != 0) return Status::OK();
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
        if (ec) return Status::FromErrno("removing stray chunk file " + path, ec.value());
        return Status::OK();
      }));
  return used;
}

void ChunkStore::Close() {
  layouts_.Clear();  // chunk files held open by cached layouts
  engines_.reset();
}

// ---- what the transaction layer asks of the chunk store (store::TxnHooks)
// --------------------------------------------------------------------------------------

store::TxnHooks ChunkStore::TxnHooksForChunks() {
  store::TxnHooks hooks;
  hooks.sync_data = [this](PreparedChunk& chunk) -> Status {
    const int fd = chunk.fd.get();
    Result<store::EnginePool::Lease> engine = engines_->Acquire();
    Status s = engine.ok() ? (*engine)->SyncData(fd) : engine.status();
    // WriteChunk set the size after its writes completed. Writes that a device (or the fault
    // injector's volatile cache) applies only at the sync may land past it (the last block's
    // padding): set it again then, and sync that too.
    struct stat st;
    if (s.ok() && ::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) != chunk.size) {
      s = ::ftruncate(fd, static_cast<off_t>(chunk.size)) == 0
              ? (*engine)->SyncData(fd)
              : Status::FromErrno("setting the size of " + chunk.temp_path, errno);
    }
    // Unsynced writes of this chunk file may be lost without another error ever saying so.
    if (!s.ok() && engine.ok()) txn_.SetBackgroundError(s.WithContext("syncing chunk data"));
    return s;
  };
  hooks.install = [this](const std::vector<PreparedChunk*>& chunks, std::vector<Status>* results) {
    std::vector<std::string> dirs;
    for (size_t i = 0; i < chunks.size(); ++i) {
      PreparedChunk& chunk = *chunks[i];
      (*results)[i] = files_.Install(chunk.temp_path, chunk.id, &dirs);
      if ((*results)[i].ok()) {
        chunk.installed = true;
        chunk.temp_path.clear();
      } else {
        ++counters_.errors;
      }
    }
    if (Status s = files_.SyncDirs(dirs); !s.ok()) {
      ++counters_.errors;
      for (Status& r : *results) {
        if (r.ok()) r = s.WithContext("installing a chunk");
      }
    }
  };
  hooks.settle = [this](Db& writer, const std::vector<const TxnEffects*>& committed,
                        const std::vector<PreparedChunk*>& failed) {
    // A chunk deleted and published again in this same transaction keeps its file; an installed
    // file that no committed row names (its change failed) goes, unless its chunk is stored (then
    // it is that chunk's file: same bytes).
    std::set<ChunkId> published, deleted;
    for (const TxnEffects* fx : committed) {
      for (const PreparedChunk* p : fx->published) published.insert(p->id);
      for (const ChunkId& id : fx->deleted_chunks) deleted.insert(id);
    }
    for (PreparedChunk* chunk : failed) {
      if (!chunk->installed || published.count(chunk->id) != 0) continue;
      Result<bool> stored = StoredIn(writer, chunk->id);
      if (stored.ok() && !*stored) files_.Remove(chunk->id);
      chunk->installed = false;
      chunk->written = false;
    }
    std::vector<ChunkId> doomed;
    for (const ChunkId& id : deleted) {
      if (published.count(id) == 0) doomed.push_back(id);
    }
    return doomed;
  };
  hooks.remove_files = [this](const std::vector<ChunkId>& chunks, Db* recheck) {
    for (const ChunkId& id : chunks) {
      if (recheck != nullptr) {
        Result<bool> stored = StoredIn(*recheck, id);
        // When the database cannot say, the file stays: the next open removes it if it is stray.
        if (!stored.ok() || *stored) continue;
      }
      files_.Remove(id);
    }
  };
  // LRU times ride along with some transaction now and then, so the map stays small.
  hooks.ride_along_due = [this] { return touches_.size() >= 4096; };
  hooks.ride_along = [this](Db& db) { return FlushTouched(db); };
  return hooks;
}

void ChunkStore::ApplyEffects(TxnEffects& fx) {
  for (const ChunkId& id : fx.deleted_chunks) layouts_.Erase(id);
  space_.Apply(fx);
  chunk_count_ += fx.chunk_delta;
  if (fx.evicted_chunks > 0) {
    counters_.evictions += fx.evicted_chunks;
    counters_.evicted_bytes += fx.evicted_bytes;
    if (on_evict_ && !fx.evicted.empty()) on_evict_(fx.evicted);
  }
}

Status ChunkStore::FlushTouched(Db& db) {
  const std::unordered_map<ChunkId, int64_t, store::IdHasher> batch = touches_.Take();
  if (batch.empty()) return Status::OK();
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("UPDATE chunks SET atime = max(atime, ?) WHERE id = ?"));
  for (const auto& [id, t] : batch) {
    q.BindInt(1, t).BindId(2, id);
    KDN_RETURN_IF_ERROR(q.Run());
  }
  return Status::OK();
}

// ---- lookups
// --------------------------------------------------------------------------------------

Result<std::shared_ptr<const ChunkLayout>> ChunkStore::LoadLayout(const ChunkId& id) {
  if (auto cached = layouts_.Find(id)) return cached;
  const uint64_t generation = layouts_.generation();
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, readers_->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  auto layout = std::make_shared<ChunkLayout>();
  layout->id = id;
  {
    KDN_ASSIGN_OR_RETURN(
        Stmt q, db->Prepare("SELECT size, block_bytes, sums, kv FROM chunks WHERE id = ?"));
    q.BindId(1, id);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return NotFoundChunk(id);
    layout->size = q.U64(0);
    layout->block_bytes = static_cast<uint32_t>(q.U64(1));
    if (!store::DecodeSums(q.Blob(2), &layout->sums)) layout->sums.clear();
    layout->kv = q.Int(3) != 0;
  }
  if (layout->size == 0) {  // empty content has no file: there is nothing to read
    layouts_.Insert(layout, generation);
    return std::shared_ptr<const ChunkLayout>(std::move(layout));
  }
  Result<UniqueFd> fd = files_.OpenRead(id, true);
  if (!fd.ok()) {
    if (fd.status().sys_errno() == ENOENT) {
      // Deleted since the snapshot (its file goes right after the commit), or lost.
      KDN_ASSIGN_OR_RETURN(bool still, ChunkExists(id));
      if (!still) return NotFoundChunk(id);
    }
    ++counters_.errors;
    return fd.status();
  }
  layout->fd = std::move(*fd);
  layout->path = files_.PathOf(id);
  Status check = store::CheckLayout(*layout);
  if (!check.ok()) {
    ++counters_.errors;
    return check;
  }
  layouts_.Insert(layout, generation);
  return std::shared_ptr<const ChunkLayout>(std::move(layout));
}

Result<bool> ChunkStore::ChunkExists(const ChunkId& id) {
  if (layouts_.Find(id)) return true;
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, readers_->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT 1 FROM chunks WHERE id = ?"));
  q.BindId(1, id);
  return q.Step();
}

// ---- preparing content
// ----------------------------------------------------------------------------

namespace {
// Content up to this size is hashed before any byte of it is written (PrepareMemory).
constexpr uint64_t kHashFirstBytes = uint64_t{64} << 10;
}  // namespace

Result<std::unique_ptr<PreparedChunk>> ChunkStore::PrepareMemory(std::span<const std::byte> bytes,
                                                                 store::ChunkSource& source) {
  auto chunk = std::make_unique<PreparedChunk>();
  chunk->size = bytes.size();
  store::SpanByteSource content(bytes);
  Result<std::optional<store::KvIndex>> kv = store::InspectKvContent(content);
  if (!kv.ok()) return KvRefused(kv.status());
  chunk->kv = std::move(*kv);
  // Small content is hashed first: hashing it costs less than a temporary file, which content
  // already stored (the same small file written again) would throw away unused.
  if (chunk->size <= kHashFirstBytes ||
      !TryReserve(*chunk, io::AlignUp(chunk->size, io::kDirectAlign))) {
    store::ContentHasher hasher(store::kBlockBytes);
    hasher.Update(bytes);
    chunk->id = hasher.Finish(&chunk->sums);
    return chunk;
  }
  // Written before the id is known: new content (the common case) then costs max(hash, write)
  // rather than their sum. Content already stored costs a write that is thrown away.
  store::ContentHasher hasher(store::kBlockBytes);
  KDN_RETURN_IF_ERROR(WriteFile(*chunk, source, &hasher));
  chunk->id = hasher.Finish(&chunk->sums);
  Result<bool> exists = ChunkExists(chunk->id);
  if (!exists.ok() || *exists) FreeUnpublished(*chunk);  // the commit only takes a reference
  if (!exists.ok()) return exists.status();
  return chunk;
}

namespace {

// Whatever goes wrong while a chunk is prepared, the capacity it holds and any file written for it
// go back, unless it is kept for the commit.
class FreeUnlessKept {
 public:
  FreeUnlessKept(ChunkStore& chunks, PreparedChunk* chunk) : chunks_(chunks), chunk_(chunk) {}
  FreeUnlessKept(const FreeUnlessKept&) = delete;
  FreeUnlessKept& operator=(const FreeUnlessKept&) = delete;
  ~FreeUnlessKept() {
    if (chunk_ != nullptr) chunks_.FreeUnpublished(*chunk_);
  }
  void Keep() { chunk_ = nullptr; }

 private:
  ChunkStore& chunks_;
  PreparedChunk* chunk_;
};

// Passes each kBlockBytes block of the first `size` bytes of `source` (the last one may be
// shorter) to `fn`, in order, read through a window that this thread reuses.
Status ForEachBlock(const ByteSource& source, uint64_t size,
                    const std::function<Status(std::span<const std::byte>)>& fn) {
  static thread_local io::AlignedBuffer window(32 * size_t{store::kBlockBytes});
  if (window.empty()) return Status::NoSpace("cannot allocate a read buffer");
  for (uint64_t off = 0; off < size; off += window.size()) {
    const uint64_t n = std::min<uint64_t>(window.size(), size - off);
    KDN_RETURN_IF_ERROR(source.ReadAt(off, {window.data(), n}));
    for (uint64_t b = 0; b < n; b += store::kBlockBytes) {
      const size_t len = static_cast<size_t>(std::min<uint64_t>(store::kBlockBytes, n - b));
      KDN_RETURN_IF_ERROR(fn(std::span<const std::byte>(window.data() + b, len)));
    }
  }
  return Status::OK();
}

// The size of a staged file, which must be a regular file (*st: what fstat said).
Result<uint64_t> StagedFileSize(int fd, const std::string& path, struct stat* st) {
  if (::fstat(fd, st) != 0) return Status::FromErrno("stat of " + path, errno);
  if (!S_ISREG(st->st_mode)) return Status::InvalidArgument(path + " is not a regular file");
  return static_cast<uint64_t>(st->st_size);
}

}  // namespace

Result<std::unique_ptr<PreparedChunk>> ChunkStore::PrepareHashedFile(int fd,
                                                                     const std::string& path,
                                                                     const ChunkId& id,
                                                                     uint64_t held) {
  auto chunk = std::make_unique<PreparedChunk>();
  chunk->reserved = held;
  FreeUnlessKept guard(*this, chunk.get());
  struct stat st;
  KDN_ASSIGN_OR_RETURN(chunk->size, StagedFileSize(fd, path, &st));
  chunk->id = id;
  // What the store does not take on trust: `.kv` content passes VerifyKv, and the read checksums
  // are summed here from the file itself. Both read it from the page cache the caller filled.
  store::FdByteSource source(fd, chunk->size, path);
  Result<std::optional<store::KvIndex>> kv = store::InspectKvContent(source);
  if (!kv.ok()) return KvRefused(kv.status().WithContext(path));
  chunk->kv = std::move(*kv);
  KDN_RETURN_IF_ERROR(ForEachBlock(source, chunk->size, [&](std::span<const std::byte> block) {
    chunk->sums.push_back(store::BlockSum(block));
    return Status::OK();
  }));
  KDN_ASSIGN_OR_RETURN(bool exists, ChunkExists(chunk->id));
  if (exists || chunk->size == 0) {  // the commit only takes a reference
    guard.Keep();
    return chunk;
  }
  // The file itself becomes the chunk file: the commit syncs it and renames it into place. Its
  // descriptor is the store's kind (O_DIRECT) because it becomes the chunk's cached layout.
  const uint64_t need = io::AlignUp(chunk->size, io::kDirectAlign);
  if (chunk->reserved < need) KDN_RETURN_IF_ERROR(Reserve(*chunk, need - chunk->reserved));
  chunk->fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOFOLLOW));
  if (!chunk->fd.valid()) return Status::FromErrno("opening " + path, errno);
  struct stat again;
  if (::fstat(chunk->fd.get(), &again) != 0 || again.st_ino != st.st_ino ||
      again.st_dev != st.st_dev) {
    return Status::InvalidArgument(path + " was replaced while it was being committed");
  }
  // Chunk files are their owner's alone, whatever mode the caller created it with.
  if ((again.st_mode & 07777) != store::kFileMode &&
      ::fchmod(chunk->fd.get(), store::kFileMode) != 0) {
    return Status::FromErrno("chmod of " + path, errno);
  }
  chunk->temp_path = path;
  chunk->written = true;
  guard.Keep();
  return chunk;
}

Result<std::unique_ptr<PreparedChunk>> ChunkStore::PrepareFile(int fd, const std::string& path,
                                                               uint64_t held) {
  auto chunk = std::make_unique<PreparedChunk>();
  chunk->reserved = held;
  FreeUnlessKept guard(*this, chunk.get());
  struct stat st;
  KDN_ASSIGN_OR_RETURN(chunk->size, StagedFileSize(fd, path, &st));
  store::FdByteSource source(fd, chunk->size, path);
  auto inspect = [&]() -> Status {
    Result<std::optional<store::KvIndex>> kv = store::InspectKvContent(source);
    if (!kv.ok()) return KvRefused(kv.status().WithContext(path));
    chunk->kv = std::move(*kv);
    return Status::OK();
  };
  const uint64_t need = io::AlignUp(chunk->size, io::kDirectAlign);
  // The layout (sparse or not) depends on the kind, known from the first bytes; the full check
  // comes after the write, below.
  std::array<std::byte, 8> magic{};
  const size_t magic_n = static_cast<size_t>(std::min<uint64_t>(magic.size(), chunk->size));
  KDN_RETURN_IF_ERROR(source.ReadAt(0, {magic.data(), magic_n}));
  const bool looks_kv = HasKvMagic(std::span<const std::byte>(magic.data(), magic_n));
  if (chunk->size > 0 &&
      (chunk->reserved >= need || TryReserve(*chunk, need - chunk->reserved))) {
    // Written before the id is known, hashed from the very bytes written: one SHA-256 pass,
    // where hashing first and copying after took two (the copy hashed again to prove that the
    // file had not changed between them). Content already stored (a dedup hit) costs a write
    // that is thrown away, as in PrepareMemory.
    if (looks_kv) chunk->kv.emplace();  // no holes in a `.kv` chunk (WriteFile)
    store::FileChunkSource copy(fd, chunk->size, path, /*remember=*/false);
    store::ContentHasher hasher(store::kBlockBytes);
    KDN_RETURN_IF_ERROR(WriteFile(*chunk, copy, &hasher));
    chunk->id = hasher.Finish(&chunk->sums);
    chunk->kv.reset();
    // Then the checks of what was written: `.kv` content read again by VerifyKv, and every block
    // of the file against the sums of the bytes written (xxh3, a fraction of SHA-256's cost), so
    // that what was verified is what is stored.
    KDN_RETURN_IF_ERROR(inspect());
    size_t index = 0;
    KDN_RETURN_IF_ERROR(ForEachBlock(source, chunk->size, [&](std::span<const std::byte> block) {
      return store::BlockSum(block) == chunk->sums[index++]
                 ? Status::OK()
                 : Status::InvalidArgument(path + " changed while it was being committed");
    }));
    KDN_ASSIGN_OR_RETURN(bool exists, ChunkExists(chunk->id));
    if (exists) FreeUnpublished(*chunk);  // the commit only takes a reference
    guard.Keep();
    return chunk;
  }
  KDN_RETURN_IF_ERROR(inspect());
  // One pass to hash (the id decides whether the bytes need writing at all), through a buffer
  // reused by this thread.
  store::ChunkHasher hasher;
  KDN_RETURN_IF_ERROR(ForEachBlock(source, chunk->size, [&](std::span<const std::byte> block) {
    hasher.Update(block);
    chunk->sums.push_back(store::BlockSum(block));
    return Status::OK();
  }));
  chunk->id = hasher.Finish();
  guard.Keep();
  return chunk;
}

// ---- space
// ----------------------------------------------------------------------------------------

namespace store {

void Space::SetUsed(uint64_t bytes) {
  MutexLock lock(mu_);
  used_ = bytes;
}

uint64_t Space::InUse() {
  MutexLock lock(mu_);
  return used_ + reserved_;
}

bool Space::TryReserve(PreparedChunk& chunk, uint64_t bytes) {
  const uint64_t cap = capacity();
  MutexLock lock(mu_);
  // Without a limit the filesystem is the limit: a write it refuses fails with ENOSPC.
  if (cap != 0 && used_ + reserved_ + bytes > cap) return false;
  reserved_ += bytes;
  chunk.reserved += bytes;
  return true;
}

void Space::Unreserve(uint64_t bytes) {
  MutexLock lock(mu_);
  reserved_ -= std::min(reserved_, bytes);
}

bool Space::HasRoomFor(uint64_t bytes) {
  const uint64_t cap = capacity();
  MutexLock lock(mu_);
  return cap == 0 || used_ + reserved_ + bytes <= cap;
}

void Space::Apply(TxnEffects& fx) {
  MutexLock lock(mu_);
  for (PreparedChunk* p : fx.published) {
    p->published = true;
    reserved_ -= std::min(reserved_, p->reserved);
    p->reserved = 0;
    used_ += io::AlignUp(p->size, io::kDirectAlign);
  }
  used_ -= std::min(used_, fx.freed_bytes);
  if (fx.xattr_bytes_delta >= 0) {
    used_ += static_cast<uint64_t>(fx.xattr_bytes_delta);
  } else {
    used_ -= std::min(used_, static_cast<uint64_t>(-fx.xattr_bytes_delta));
  }
}

void TouchLog::Touch(const ChunkId& id, int64_t now_ns) {
  MutexLock lock(mu_);
  touched_[id] = now_ns;
}

int64_t TouchLog::Latest(const ChunkId& id, int64_t atime_ns) {
  MutexLock lock(mu_);
  if (auto it = touched_.find(id); it != touched_.end()) return std::max(atime_ns, it->second);
  return atime_ns;
}

size_t TouchLog::size() {
  MutexLock lock(mu_);
  return touched_.size();
}

std::unordered_map<ChunkId, int64_t, IdHasher> TouchLog::Take() {
  std::unordered_map<ChunkId, int64_t, IdHasher> all;
  MutexLock lock(mu_);
  all.swap(touched_);
  return all;
}

}  // namespace store

Status ChunkStore::Reserve(PreparedChunk& chunk, uint64_t bytes) {
  const uint64_t cap0 = space_.capacity();
  if (cap0 != 0 && bytes > cap0) {
    return Status::NoSpace("a chunk of " + std::to_string(bytes) +
                           " bytes is larger than the store's capacity (" + std::to_string(cap0) +
                           " bytes)");
  }
  while (true) {
    if (TryReserve(chunk, bytes)) return Status::OK();
    const uint64_t cap = space_.capacity();
    const uint64_t in_use = space_.InUse();
    const uint64_t deficit = in_use + bytes > cap ? in_use + bytes - cap : 0;
    KDN_ASSIGN_OR_RETURN(uint64_t evicted, Evict(std::max<uint64_t>(deficit, 1)));
    if (evicted == 0) {
      return Status::NoSpace("store is full: capacity " + std::to_string(cap) + " bytes, " +
                             std::to_string(in_use) + " in use, " + std::to_string(bytes) +
                             " more needed, and nothing evictable");
    }
  }
}

bool ChunkStore::TryReserve(PreparedChunk& chunk, uint64_t bytes) {
  return space_.TryReserve(chunk, bytes);
}

Status ChunkStore::ReserveSpace(uint64_t bytes, bool evict) {
  if (bytes == 0) return Status::OK();
  PreparedChunk holder;
  if (!evict) {
    if (!TryReserve(holder, bytes)) {
      return Status::NoSpace("store is full: " + std::to_string(bytes) + " bytes not at hand");
    }
  } else {
    KDN_RETURN_IF_ERROR(Reserve(holder, bytes));
  }
  holder.reserved = 0;  // now the caller's, until ReleaseSpace or a commit takes it
  return Status::OK();
}

void ChunkStore::ReleaseSpace(uint64_t bytes) {
  if (bytes == 0) return;
  space_.Unreserve(bytes);
}

void ChunkStore::FreeUnpublished(PreparedChunk& chunk) {
  if (chunk.published) return;
  if (!chunk.temp_path.empty()) {
    (void)::unlink(chunk.temp_path.c_str());
    chunk.temp_path.clear();
  }
  chunk.fd.reset();
  chunk.written = false;
  if (chunk.reserved != 0) {
    space_.Unreserve(chunk.reserved);
    chunk.reserved = 0;
  }
}

void ChunkStore::CacheLayout(PreparedChunk& chunk, uint64_t generation) {
  if (!chunk.fd.valid()) return;
  auto layout = std::make_shared<ChunkLayout>();
  layout->id = chunk.id;
  layout->size = chunk.size;
  layout->sums = chunk.sums;
  layout->kv = chunk.kv.has_value();
  layout->fd = std::move(chunk.fd);  // the chunk file itself, now that it is in place
  layout->path = files_.PathOf(chunk.id);
  layouts_.Insert(std::move(layout), generation);
}

Status ChunkStore::WriteData(PreparedChunk& chunk, store::ChunkSource& source) {
  if (chunk.size == 0) {
    chunk.written = true;
    return Status::OK();
  }
  // A commit may arrive holding capacity already (CommitOptions::reserved_bytes).
  const uint64_t need = io::AlignUp(chunk.size, io::kDirectAlign);
  if (chunk.reserved < need) KDN_RETURN_IF_ERROR(Reserve(chunk, need - chunk.reserved));
  return WriteFile(chunk, source, nullptr);
}

Status ChunkStore::WriteFile(PreparedChunk& chunk, store::ChunkSource& source,
                             store::ContentHasher* hasher) {
  Status s;
  {
    Result<UniqueFd> fd = files_.CreateTemp(&chunk.temp_path);
    if (fd.ok()) {
      chunk.fd = std::move(*fd);
      Result<store::EnginePool::Lease> engine = engines_->Acquire();
      // Holes: the all-zero blocks of plain content are not stored (`.kv` blocks never are zero
      // for long, and their file is read as a whole anyway).
      s = engine.ok() ? store::WriteChunk(**engine, chunk.fd.get(), chunk.temp_path, source, shape_,
                                          !chunk.kv.has_value(), hasher)
                      : engine.status();
    } else {
      chunk.temp_path.clear();
      s = fd.status();
    }
  }
  if (!s.ok()) {
    ++counters_.errors;
    FreeUnpublished(chunk);
    return s.WithContext(hasher ? std::string("writing a new chunk")
                                : "writing chunk " + chunk.id.ToHex());
  }
  chunk.written = true;
  return Status::OK();
}

Result<uint64_t> ChunkStore::Evict(uint64_t want_bytes) {
  uint64_t got = 0;
  KDN_RETURN_IF_ERROR(txn_.Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(FlushTouched(db));
    const int64_t now = NowNs();
    int64_t skipped = 0;
    while (got < want_bytes) {
      std::vector<std::pair<ChunkId, uint64_t>> batch;
      {
        KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT id, stored FROM chunks WHERE put_keep = 0 "
                                                "AND inode_keep = 0 AND pins = 0 "
                                                // outbox notes keep the chunks they name
                                                "AND id NOT IN (SELECT chunk FROM outbox "
                                                "WHERE chunk IS NOT NULL) "
                                                "ORDER BY atime, id LIMIT 32 OFFSET ?"));
        q.BindInt(1, skipped);
        while (true) {
          KDN_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) break;
          batch.emplace_back(q.Chunk(0), q.U64(1));
        }
      }
      if (batch.empty()) break;
      for (const auto& [id, stored] : batch) {
        // The files whose content it is go with it (the namespace's part, registered at open).
        KDN_ASSIGN_OR_RETURN(bool removed, release_names_(db, id, now, fx));
        if (!removed) {  // an open file keeps its content
          ++skipped;
          continue;
        }
        KDN_ASSIGN_OR_RETURN(Stmt still, db.Prepare("SELECT 1 FROM chunks WHERE id = ?"));
        still.BindId(1, id);
        KDN_ASSIGN_OR_RETURN(bool exists, still.Step());
        still.Reset();
        if (exists) KDN_RETURN_IF_ERROR(DeleteChunkRows(db, id, fx));  // weak Put references
        got += stored;
        ++fx.evicted_chunks;
        fx.evicted_bytes += stored;
        if (got >= want_bytes) break;
      }
    }
    return Status::OK();
  }));
  return got;
}

// ---- publishing and references
// --------------------------------------------------------------------

Result<bool> ChunkStore::InstallChunk(Db& db, PreparedChunk& chunk, RefKind kind, bool keep,
                                      TxnEffects& fx) {
  bool exists;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT 1 FROM chunks WHERE id = ?"));
    q.BindId(1, chunk.id);
    KDN_ASSIGN_OR_RETURN(exists, q.Step());
  }
  if (exists) {
    KDN_RETURN_IF_ERROR(AddChunkRef(db, chunk.id, kind, keep));
    return true;
  }
  if (chunk.size > 0 && !chunk.installed) return false;
  const int64_t now = NowNs();
  {
    KDN_ASSIGN_OR_RETURN(
        Stmt q, db.Prepare("INSERT INTO chunks(id, size, stored, block_bytes, sums, put_refs, "
                           "put_keep, inode_refs, inode_keep, pins, atime, ctime, kv) "
                           "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)"));
    const bool put = kind == RefKind::kPut;
    q.BindId(1, chunk.id).BindInt(2, chunk.size);
    q.BindInt(3, io::AlignUp(chunk.size, io::kDirectAlign)).BindInt(4, store::kBlockBytes);
    q.BindBlob(5, store::EncodeSums(chunk.sums));
    q.BindInt(6, put ? 1 : 0).BindInt(7, put && keep ? 1 : 0);
    q.BindInt(8, put ? 0 : 1).BindInt(9, !put && keep ? 1 : 0);
    q.BindInt(10, now).BindInt(11, now).BindInt(12, chunk.kv ? 1 : 0);
    KDN_RETURN_IF_ERROR(q.Run());
  }
  if (chunk.kv) {
    const KvSummary& k = chunk.kv->summary;
    KDN_ASSIGN_OR_RETURN(
        Stmt q, db.Prepare("INSERT INTO kv_meta(chunk, model, fingerprint, n_layers, n_tokens, "
                           "position_offset, chunk_tokens, codec, raw_bytes, file_bytes, n_prefix) "
                           "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    q.BindId(1, chunk.id).BindText(2, k.model).BindId(3, k.fingerprint).BindInt(4, k.n_layers);
    q.BindInt(5, k.n_tokens).BindInt(6, k.position_offset).BindInt(7, k.chunk_tokens);
    q.BindText(8, k.codec).BindInt(9, k.raw_bytes).BindInt(10, k.file_bytes);
    q.BindInt(11, chunk.kv->prefix_hashes.size());
    KDN_RETURN_IF_ERROR(q.Run());
    KDN_ASSIGN_OR_RETURN(
        Stmt p, db.Prepare("INSERT OR IGNORE INTO prefixes(hash, chunk, idx) VALUES(?, ?, ?)"));
    for (size_t i = 0; i < chunk.kv->prefix_hashes.size(); ++i) {
      p.BindId(1, chunk.kv->prefix_hashes[i]).BindId(2, chunk.id).BindInt(3, i);
      KDN_RETURN_IF_ERROR(p.Run());
    }
  }
  fx.published.push_back(&chunk);
  ++fx.chunk_delta;
  return true;
}

Status ChunkStore::AddChunkRef(Db& db, const ChunkId& id, RefKind kind, bool keep) {
  KDN_ASSIGN_OR_RETURN(
      Stmt q, db.Prepare(kind == RefKind::kPut
                             ? "UPDATE chunks SET put_refs = put_refs + 1, put_keep = put_keep + ? "
                               "WHERE id = ?"
                             : "UPDATE chunks SET inode_refs = inode_refs + 1, "
                               "inode_keep = inode_keep + ? WHERE id = ?"));
  q.BindInt(1, keep ? 1 : 0).BindId(2, id);
  KDN_RETURN_IF_ERROR(q.Run());
  if (db.Changes() != 1) return NotFoundChunk(id);
  return Status::OK();
}

Status ChunkStore::DropChunkRef(Db& db, const ChunkId& id, RefKind kind, bool keep,
                                TxnEffects& fx) {
  int64_t put_refs, put_keep, inode_refs, inode_keep;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT put_refs, put_keep, inode_refs, inode_keep "
                                            "FROM chunks WHERE id = ?"));
    q.BindId(1, id);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) {
      // An inode naming a chunk that is gone (fsck reports it): nothing left to release.
      if (kind == RefKind::kInode) return Status::OK();
      return NotFoundChunk(id);
    }
    put_refs = q.Int(0);
    put_keep = q.Int(1);
    inode_refs = q.Int(2);
    inode_keep = q.Int(3);
  }
  if (kind == RefKind::kPut) {
    if (put_refs <= 0) {
      return Status::NotFound("chunk " + id.ToHex() + " has no Put reference to release");
    }
    // Evictable references go first: releasing one never makes the chunk less protected.
    if (put_refs - put_keep <= 0) --put_keep;
    --put_refs;
  } else {
    if (inode_refs > 0) --inode_refs;
    if (keep && inode_keep > 0) --inode_keep;
  }
  if (put_refs + inode_refs <= 0) return DeleteChunkRows(db, id, fx);
  KDN_ASSIGN_OR_RETURN(Stmt u, db.Prepare("UPDATE chunks SET put_refs = ?, put_keep = ?, "
                                          "inode_refs = ?, inode_keep = ? WHERE id = ?"));
  u.BindInt(1, put_refs).BindInt(2, put_keep).BindInt(3, inode_refs).BindInt(4, inode_keep);
  u.BindId(5, id);
  return u.Run();
}

Status ChunkStore::DeleteChunkRows(Db& db, const ChunkId& id, TxnEffects& fx) {
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT stored FROM chunks WHERE id = ?"));
    q.BindId(1, id);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) fx.freed_bytes += q.U64(0);
  }
  static constexpr const char* kDeletes[] = {
      "DELETE FROM chunks WHERE id = ?",
      "DELETE FROM kv_meta WHERE chunk = ?", "DELETE FROM prefixes WHERE chunk = ?"};
  for (const char* sql : kDeletes) {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare(sql));
    q.BindId(1, id);
    KDN_RETURN_IF_ERROR(q.Run());
  }
  fx.deleted_chunks.push_back(id);
  --fx.chunk_delta;
  return Status::OK();
}

Status ChunkStore::ReadAll(const ChunkId& id,
                           const std::function<Status(std::span<const std::byte>)>& sink) {
  KDN_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkLayout> layout, LoadLayout(id));
  io::AlignedBuffer window(8u << 20);
  if (window.empty()) return Status::NoSpace("cannot allocate a read buffer");
  KDN_ASSIGN_OR_RETURN(store::EnginePool::Lease engine, engines_->Acquire());
  for (uint64_t off = 0; off < layout->size; off += window.size()) {
    uint64_t n = std::min<uint64_t>(window.size(), layout->size - off);
    Status s = store::ReadChunk(*engine, *layout, off, {window.data(), n}, shape_);
    if (!s.ok()) {
      ++counters_.errors;
      return s;
    }
    KDN_RETURN_IF_ERROR(sink({window.data(), n}));
  }
  return Status::OK();
}

// ---- public chunk API
// -----------------------------------------------------------------------------

namespace {
// The commit body's way to say "the chunk is not stored and we have no bytes written".
Status Vanished(bool* flag) {
  *flag = true;
  return Status::Internal("chunk vanished during commit");
}
}  // namespace

Result<ChunkId> ChunkStore::Put(std::span<const std::byte> bytes, const PutOptions& options) {
  store::MemoryChunkSource source(bytes);
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<PreparedChunk> chunk, PrepareMemory(bytes, source));
  bool dedup = false;
  KDN_RETURN_IF_ERROR(
      StoreAndCommit(*chunk, source, false, [&](Db& db, TxnEffects& fx, bool* vanished) -> Status {
        KDN_ASSIGN_OR_RETURN(bool ok,
                             InstallChunk(db, *chunk, RefKind::kPut, !options.evictable, fx));
        if (!ok) return Vanished(vanished);
        dedup = fx.published.empty();
        return Status::OK();
      }));
  ++counters_.puts;
  counters_.put_bytes += bytes.size();
  if (dedup) ++counters_.dedup_hits;
  return chunk->id;
}

Result<size_t> ChunkStore::Get(const ChunkId& id, uint64_t offset, std::span<std::byte> out) {
  const uint64_t t0 = MonoNs();
  size_t n = 0;
  {
    KDN_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkLayout> layout, LoadLayout(id));
    if (offset >= layout->size || out.empty()) return size_t{0};
    n = static_cast<size_t>(std::min<uint64_t>(out.size(), layout->size - offset));
    KDN_ASSIGN_OR_RETURN(store::EnginePool::Lease engine, engines_->Acquire());
    Status s = store::ReadChunk(*engine, *layout, offset, out.first(n), shape_);
    if (!s.ok()) {
      ++counters_.errors;
      return s;
    }
  }
  Touch(id);
  ++counters_.reads;
  counters_.read_bytes += n;
  read_latency_.Record(MonoNs() - t0);
  return n;
}

Result<ChunkInfo> ChunkStore::StatChunk(const ChunkId& id) {
  ChunkInfo info;
  info.id = id;
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, readers_->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  {
    KDN_ASSIGN_OR_RETURN(
        Stmt q, db->Prepare("SELECT size, stored, put_refs + inode_refs, "
                            "put_keep = 0 AND inode_keep = 0 AND pins = 0, atime, ctime, kv "
                            "FROM chunks WHERE id = ?"));
    q.BindId(1, id);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return NotFoundChunk(id);
    info.size = q.U64(0);
    info.stored_bytes = q.U64(1);
    info.refs = static_cast<uint32_t>(q.U64(2));
    info.evictable = q.Int(3) != 0;
    info.atime_ns = q.Int(4);
    info.created_ns = q.Int(5);
    if (q.Int(6) == 0) {
      info.atime_ns = touches_.Latest(id, info.atime_ns);
      return info;
    }
  }
  KDN_ASSIGN_OR_RETURN(
      Stmt k, db->Prepare("SELECT model, fingerprint, n_layers, n_tokens, position_offset, "
                          "chunk_tokens, codec, raw_bytes, file_bytes, n_prefix "
                          "FROM kv_meta WHERE chunk = ?"));
  k.BindId(1, id);
  KDN_ASSIGN_OR_RETURN(bool row, k.Step());
  if (row) {
    KvSummary s;
    s.model = k.Text(0);
    s.fingerprint = k.Id(1);
    s.n_layers = static_cast<uint32_t>(k.U64(2));
    s.n_tokens = static_cast<uint32_t>(k.U64(3));
    s.position_offset = static_cast<uint32_t>(k.U64(4));
    s.chunk_tokens = static_cast<uint32_t>(k.U64(5));
    s.codec = k.Text(6);
    s.raw_bytes = k.U64(7);
    s.file_bytes = k.U64(8);
    s.n_prefix_hashes = static_cast<uint32_t>(k.U64(9));
    info.kv = std::move(s);
  }
  info.atime_ns = touches_.Latest(id, info.atime_ns);
  return info;
}

Status ChunkStore::Release(const ChunkId& id) {
  return txn_.Write(false, [&](Db& db, TxnEffects& fx) {
    return DropChunkRef(db, id, RefKind::kPut, false, fx);
  });
}

Result<std::vector<Extent>> ChunkStore::Extents(const ChunkId& id) {
  KDN_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkLayout> layout, LoadLayout(id));
  if (layout->size == 0) return std::vector<Extent>{};
  return std::vector<Extent>{Extent{files_.PathOf(id), 0, layout->size}};
}

Result<int> ChunkStore::OpenChunkForRead(const ChunkId& id) {
  KDN_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkLayout> layout, LoadLayout(id));
  if (layout->size == 0) {
    return Status::InvalidArgument("chunk " + id.ToHex() + " is empty: it has no file");
  }
  Result<UniqueFd> fd = files_.OpenRead(id, false);
  if (!fd.ok()) {
    // Deleted meanwhile: its file goes right after the commit that dropped it.
    if (fd.status().sys_errno() == ENOENT) return NotFoundChunk(id);
    ++counters_.errors;
    return fd.status();
  }
  return fd->release();
}

void ChunkStore::Touch(const ChunkId& id) {
  touches_.Touch(id, NowNs());
}

Status ChunkStore::VerifyChunk(const ChunkId& id) {
  store::ChunkHasher hasher;
  uint64_t size = 0;
  KDN_RETURN_IF_ERROR(ReadAll(id, [&](std::span<const std::byte> bytes) {
    hasher.Update(bytes);
    size += bytes.size();
    return Status::OK();
  }));
  ChunkId actual = hasher.Finish();
  if (!(actual == id)) {
    ++counters_.errors;
    return Status::Corruption("chunk " + id.ToHex() + ": content hashes to " + actual.ToHex());
  }
  KDN_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkLayout> layout, LoadLayout(id));
  if (!layout->kv) return Status::OK();
  ChunkByteSource source(*engines_, shape_, layout);
  Result<std::optional<store::KvIndex>> kv = store::InspectKvContent(source);
  if (!kv.ok() || !kv->has_value()) {
    ++counters_.errors;
    return Status::Corruption(
        "chunk " + id.ToHex() + ": " +
        (kv.ok() ? std::string("no longer a .kv file") : kv.status().message()));
  }
  return Status::OK();
}

// ---- kdn::Store's chunk calls: the chunk store's
// --------------------------------------------------------------------------------------

Result<ChunkId> Store::Put(std::span<const std::byte> bytes, const PutOptions& options) {
  return impl_->chunks.Put(bytes, options);
}

Result<size_t> Store::Get(const ChunkId& id, uint64_t offset, std::span<std::byte> out) {
  return impl_->chunks.Get(id, offset, out);
}

Result<ChunkInfo> Store::StatChunk(const ChunkId& id) {
  return impl_->chunks.StatChunk(id);
}

Status Store::Release(const ChunkId& id) {
  return impl_->chunks.Release(id);
}

Result<std::vector<Extent>> Store::Extents(const ChunkId& id) {
  return impl_->chunks.Extents(id);
}

Result<int> Store::OpenChunkForRead(const ChunkId& id) {
  return impl_->chunks.OpenChunkForRead(id);
}

void Store::Touch(const ChunkId& id) {
  impl_->chunks.Touch(id);
}

Status Store::VerifyChunk(const ChunkId& id) {
  return impl_->chunks.VerifyChunk(id);
}

Status Store::ReserveSpace(uint64_t bytes, bool evict) {
  return impl_->chunks.ReserveSpace(bytes, evict);
}

void Store::ReleaseSpace(uint64_t bytes) {
  impl_->chunks.ReleaseSpace(bytes);
}

}  // namespace kdn
