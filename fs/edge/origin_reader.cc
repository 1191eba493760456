#include "fs/edge/origin_reader.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <set>

#include "kdn/format.h"
#include "store/format/file_io.h"

namespace kdn::edge {
namespace {

constexpr size_t kMaxRemembered = 100000;  // remote_ entries before the cache starts over
constexpr size_t kReadDirPage = 1024;
// Permission bits taken from an origin object: never setuid, setgid or sticky, since whoever can
// write to the origin must not be able to plant a setuid file on every node.
constexpr uint32_t kOriginModeBits = 0777;
// A directory's keep the sticky bit (a shared set where each removes only their own files) and
// setgid (new files take the directory's group); neither gives anyone a privilege.
constexpr uint32_t kOriginDirModeBits = 03777;

Status Eio(const std::string& why) {
  return Status::FromErrno(why, EIO);
}

}  // namespace

OriginReader::OriginReader(Store& store, std::shared_ptr<origin::Origin> origin,
                           ReaderOptions options, ForgetFn forget, HoldFn hold)
    : store_(store),
      origin_(std::move(origin)),
      options_(std::move(options)),
      forget_(std::move(forget)),
      hold_(std::move(hold)) {
  for (unsigned i = 0; i < std::max(1u, options_.fetch_threads); ++i) {
    pool_.emplace_back([this] { PoolThread(); });
  }
}

Result<std::optional<OriginReader::Remote>> OriginReader::LoadRemote(Ino ino) {
  {
    std::lock_guard lock(mu_);
    if (auto it = remote_.find(ino); it != remote_.end()) return it->second;
  }
  std::optional<Remote> remote;
  Result<std::string> value = store_.GetXattr(ino, kRemoteXattr);
  if (!value.ok() && !value.status().IsNotFound()) return value.status();
  if (value.ok()) {
    std::optional<NsObject> object = NsObjectOfRecord(*value);
    if (object) remote = Remote{value->substr(0, value->find('\0')), std::move(*object)};
  }
  std::lock_guard lock(mu_);
  if (remote_.size() >= kMaxRemembered) remote_.clear();
  remote_[ino] = remote;
  return remote;
}

std::optional<NsObject> OriginReader::RemoteOf(const InodeAttr& attr) {
  if (!S_ISREG(attr.mode)) return std::nullopt;
  auto remote = LoadRemote(attr.ino);
  if (!remote.ok() || !*remote) return std::nullopt;
  return (*remote)->object;
}

void OriginReader::Overlay(InodeAttr& attr) {
  if (!S_ISREG(attr.mode) || !attr.chunk.IsZero() || attr.size != 0) return;
  std::optional<NsObject> o = RemoteOf(attr);
  if (!o) return;
  attr.size = o->size;
  attr.mtime_ns = o->mtime_ns;
  attr.ctime_ns = std::max(attr.ctime_ns, o->ctime_ns);
}

void OriginReader::Detach(Ino ino) {
  {
    std::lock_guard lock(mu_);
    auto it = remote_.find(ino);
    if (it != remote_.end() && !it->second) return;  // known not to be a copy
    remote_[ino] = std::nullopt;
  }
  (void)store_.RemoveXattr(ino, kRemoteXattr);
}

void OriginReader::MarkStale(Ino dir) {
  std::lock_guard lock(mu_);
  listed_.erase(dir);
}

std::optional<NsObject> OriginReader::ReadDirMarker(const std::string& key) {
  Result<std::string> bytes = GetSmall(key);
  if (!bytes.ok()) {
    if (!bytes.status().IsNotFound()) {
      Log(options_.log, LogLevel::kError, "origin marker " + key + ": " + bytes.status().ToString());
    }
    return std::nullopt;
  }
  Result<NsObject> marker = DecodeDirMarker(*bytes);
  if (!marker.ok()) {
    if (!marker.status().IsNotFound()) {
      Log(options_.log, LogLevel::kError, "origin marker " + key + ": " + marker.status().ToString());
    }
    return std::nullopt;
  }
  return std::move(*marker);
}

void OriginReader::ApplyDirMarker(Ino dir, const origin::ObjectInfo& info) {
  // Only a copy of the origin's directory follows its marker: one made here is the marker's
  // source. The ETag of the marker last applied is kept in the record, so an unchanged marker
  // costs nothing but the listing that names it.
  Result<std::string> record = store_.GetXattr(dir, kRemoteXattr);
  if (!record.ok() || !IsRemoteDirRecord(*record) || MarkerEtagOfRecord(*record) == info.etag) {
    return;
  }
  if (info.size > kMaxNsObjectBytes) return;
  std::optional<NsObject> marker = ReadDirMarker(info.key);
  if (!marker) return;
  Result<InodeAttr> local = store_.GetAttr(dir);
  if (!local.ok() || !S_ISDIR(local->mode)) return;
  SetAttrRequest change;
  change.mode = marker->mode & kOriginDirModeBits;
  change.uid = marker->uid;
  change.gid = marker->gid;
  if ((local->mode & 07777) != *change.mode || local->uid != marker->uid ||
      local->gid != marker->gid) {
    Status s = store_.SetAttr(dir, change).status();  // chmod, chown on another node
    if (!s.ok()) {
      Log(options_.log, LogLevel::kError, "origin marker " + info.key + ": " + s.ToString());
      return;
    }
  }
  (void)store_.SetXattr(dir, kRemoteXattr, std::string(kRemoteDirRecord) + '\0' + info.etag);
}

Result<std::string> OriginReader::GetSmall(const std::string& key) {
  std::string bytes(kMaxNsObjectBytes + 1, '\0');
  KDN_ASSIGN_OR_RETURN(
      uint64_t n,
      origin_->Get(key, 0, std::span(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size())));
  if (n > kMaxNsObjectBytes) return Status::Corruption("namespace object larger than 64 KiB");
  bytes.resize(n);
  return bytes;
}

void OriginReader::Refresh(Ino dir) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    auto it = listed_.find(dir);
    if (it != listed_.end() && now - it->second < options_.ttl) return;
    // Marked before the listing: a failing origin is asked again only after the TTL.
    listed_[dir] = now;
  }
  std::lock_guard one_at_a_time(refresh_mu_);
  Result<InodeAttr> dir_attr = store_.GetAttr(dir);
  Result<std::string> path = store_.PathOf(dir);
  if (!dir_attr.ok() || !S_ISDIR(dir_attr->mode) || !path.ok()) return;
  const std::string prefix = *path == "/" ? std::string(kNsPrefix) + "/" : NsKey(*path) + "/";
  if (!origin::CheckKey(prefix + "x").ok()) return;  // a path the origin cannot name
  Result<origin::ListPage> page = origin_->ListAll(prefix, "/");
  if (!page.ok()) {
    ++counters_.listing_errors;
    Log(options_.log, LogLevel::kError,
        "origin listing of " + *path + ": " + page.status().ToString() +
            " (serving the local view; retried after the TTL)");
    return;
  }
  ++counters_.listings;
  std::set<std::string> on_origin;
  auto usable = [&](std::string_view name) {
    return !name.empty() && name.size() <= 255 && name.find('/') == std::string_view::npos &&
           !name.starts_with(".kdn-tmp") && name != ".kdn-prefix" && name != kDirMarkerName &&
           !(dir == kRootIno && name == ".kdn");
  };
  for (const std::string& p : page->prefixes) {
    std::string name = p.substr(prefix.size(), p.size() - prefix.size() - 1);
    if (!usable(name)) continue;
    on_origin.insert(name);
    if (store_.Lookup(dir, name).status().IsNotFound()) {
      NewNode node;
      // Mode and owner from the directory's marker, read before the directory appears, so that
      // a set made private on another node is private here from the start. Without a marker
      // (one not uploaded yet, or written by an earlier version) it gets its parent's owner and
      // 0755 until a marker comes (ApplyDirMarker).
      std::optional<NsObject> marker = ReadDirMarker(DirMarkerKey(
          (*path == "/" ? std::string() : *path) + "/" + name));
      node.mode = S_IFDIR | (marker ? marker->mode & kOriginDirModeBits : 0755);
      node.uid = marker ? marker->uid : dir_attr->uid;
      node.gid = marker ? marker->gid : dir_attr->gid;
      if (marker) node.time_ns = marker->mtime_ns;
      Result<InodeAttr> made = store_.MakeNode(dir, name, node);
      if (made.ok()) {
        ++counters_.names_added;
        // A copy of the origin's directory: it goes when the origin's does.
        (void)store_.SetXattr(made->ino, kRemoteXattr, kRemoteDirRecord);
      }
    }
  }
  for (const origin::ObjectInfo& obj : page->objects) {
    std::string name = obj.key.substr(prefix.size());
    if (name == kDirMarkerName && dir != kRootIno) ApplyDirMarker(dir, obj);
    if (!usable(name)) continue;
    on_origin.insert(name);
    std::optional<InodeAttr> local;
    if (Result<InodeAttr> found = store_.Lookup(dir, name); found.ok()) local = *found;
    Status s = ApplyObject(dir, name, obj, local);
    if (!s.ok()) {
      Log(options_.log, LogLevel::kError, "origin object " + obj.key + ": " + s.ToString());
    }
  }
  // Copies of origin objects whose names the origin no longer has are gone on the origin.
  std::vector<DirEntry> gone, gone_dirs;
  for (uint64_t cookie = 0;;) {
    Result<std::vector<DirEntry>> entries = store_.ReadDir(dir, cookie, kReadDirPage);
    if (!entries.ok() || entries->empty()) break;
    for (DirEntry& e : *entries) {
      cookie = e.cookie;
      if (on_origin.count(e.name) || e.name == "." || e.name == "..") continue;
      std::string child = (*path == "/" ? std::string() : *path) + "/" + e.name;
      if (S_ISDIR(e.attr.mode)) {
        // A directory that a listing made, with nothing under it on the origin (neither its
        // marker nor anything else): removed there. One made here stays (its marker may not
        // be uploaded yet); one with local names in it stays too (Rmdir refuses it).
        Result<std::string> record = store_.GetXattr(e.attr.ino, kRemoteXattr);
        if (!record.ok() || !IsRemoteDirRecord(*record)) continue;
        Result<origin::ListPage> under = origin_->List(NsKey(child) + "/", "", "", 1);
        if (under.ok() && under->objects.empty() && under->prefixes.empty()) {
          gone_dirs.push_back(std::move(e));
        }
        continue;
      }
      if (!S_ISREG(e.attr.mode)) continue;
      auto remote = LoadRemote(e.attr.ino);
      if (!remote.ok() || !*remote) continue;
      // Confirmed by the object itself: a listing is no proof of absence on every origin.
      if (origin_->Head(NsKey(child)).status().IsNotFound()) gone.push_back(std::move(e));
    }
  }
  for (const DirEntry& e : gone) {
    if (hold_) hold_(e.attr.ino);
    if (store_.Unlink(dir, e.name).ok()) {
      ++counters_.names_removed;
      if (forget_) forget_(dir, e.name, e.attr.ino);
    }
  }
  for (const DirEntry& e : gone_dirs) RemoveGoneDir(dir, e.name, e.attr.ino, 0);
}

void OriginReader::RemoveGoneDir(Ino dir, const std::string& name, Ino ino, int depth) {
  // Nothing lies under it on the origin, so every copy inside it is gone there too.
  if (depth > 256) return;
  std::vector<DirEntry> inside;
  for (uint64_t cookie = 0;;) {
    Result<std::vector<DirEntry>> entries = store_.ReadDir(ino, cookie, kReadDirPage);
    if (!entries.ok() || entries->empty()) break;
    for (DirEntry& e : *entries) {
      cookie = e.cookie;
      if (e.name != "." && e.name != "..") inside.push_back(std::move(e));
    }
  }
  for (const DirEntry& e : inside) {
    if (S_ISDIR(e.attr.mode)) {
      Result<std::string> record = store_.GetXattr(e.attr.ino, kRemoteXattr);
      if (record.ok() && IsRemoteDirRecord(*record))
        RemoveGoneDir(ino, e.name, e.attr.ino, depth + 1);
      continue;
    }
    if (!S_ISREG(e.attr.mode)) continue;
    auto remote = LoadRemote(e.attr.ino);
    if (!remote.ok() || !*remote) continue;  // written here: it stays, and so does `name`
    if (hold_) hold_(e.attr.ino);
    if (store_.Unlink(ino, e.name).ok()) {
      ++counters_.names_removed;
      if (forget_) forget_(ino, e.name, e.attr.ino);
    }
  }
  if (store_.Rmdir(dir, name).ok()) {
    ++counters_.names_removed;
    if (forget_) forget_(dir, name, ino);
  }
}

Status OriginReader::ApplyObject(Ino dir, const std::string& name, const origin::ObjectInfo& info,
                                 const std::optional<InodeAttr>& local) {
  std::optional<Remote> remote;
  if (local) {
    if (!S_ISREG(local->mode)) return Status::OK();  // a directory here: the local name stands
    KDN_ASSIGN_OR_RETURN(remote, LoadRemote(local->ino));
    // Written on this node: this node is the origin's source for it, not its copy.
    if (!remote) return Status::OK();
    if (remote->etag == info.etag) return Status::OK();
  }
  if (info.size > kMaxNsObjectBytes) return Status::Corruption("larger than 64 KiB");
  KDN_ASSIGN_OR_RETURN(std::string bytes, GetSmall(info.key));
  KDN_ASSIGN_OR_RETURN(NsObject o, DecodeNsObject(bytes));
  const std::string record = info.etag + '\0' + bytes;
  Ino ino = 0;
  if (!local) {
    NewNode node;
    node.mode = S_IFREG | (o.mode & kOriginModeBits);
    node.uid = o.uid;
    node.gid = o.gid;
    node.time_ns = o.mtime_ns;
    KDN_ASSIGN_OR_RETURN(InodeAttr made, store_.MakeNode(dir, name, node));
    ino = made.ino;
    ++counters_.names_added;
  } else {
    ino = local->ino;
    SetAttrRequest change;
    change.mode = o.mode & kOriginModeBits;
    change.uid = o.uid;
    change.gid = o.gid;
    if (local->chunk != o.chunk) {
      // Other content under the name: this copy becomes a placeholder of the new one.
      change.size = 0;
      KDN_RETURN_IF_ERROR(store_.SetAttr(ino, change).status());
      ++counters_.names_changed;
      if (forget_) forget_(dir, name, ino);
    } else if ((local->mode & 07777) != *change.mode || local->uid != o.uid ||
               local->gid != o.gid) {
      KDN_RETURN_IF_ERROR(store_.SetAttr(ino, change).status());  // chmod, chown elsewhere
      if (forget_) forget_(dir, name, ino);
    }
  }
  KDN_RETURN_IF_ERROR(store_.SetXattr(ino, kRemoteXattr, record));
  for (const auto& [xname, value] : o.xattrs) {
    if (!xname.starts_with("user.kdn.")) (void)store_.SetXattr(ino, xname, value);
  }
  std::lock_guard lock(mu_);
  remote_[ino] = Remote{info.etag, std::move(o)};
  return Status::OK();
}

// ---- read misses ------------------------------------------------------------------------------

struct OriginReader::InFlight {
  enum class Piece : uint8_t { kMissing, kTaken, kLanded };
  enum class Phase : uint8_t { kFetching, kVerified, kCommitted, kFailed };

  ~InFlight() {
    if (fd >= 0) ::close(fd);
    EVP_MD_CTX_free(digest);
    XXH3_freeState(block_state);
  }

  // Fixed at the start.
  Ino ino = 0;
  NsObject object;
  std::string key;     // chunks/<id>
  std::string staged;  // the staging file
  int fd = -1;         // open on it, read and written with pread/pwrite
  uint64_t size = 0;
  uint64_t piece_bytes = 0;
  size_t n_pieces = 0;
  std::chrono::steady_clock::time_point started;

  std::mutex mu;
  std::condition_variable cv;  // a piece landed, the header is known, the phase changed
  std::vector<Piece> pieces;
  std::deque<size_t> urgent;  // pieces readers wait for: taken before the rest
  size_t next_in_order = 0;   // no piece before it is missing
  size_t landed = 0;
  std::chrono::steady_clock::time_point last_progress;
  Phase phase = Phase::kFetching;
  std::string error;
  InodeAttr committed;
  // What the content is: known once piece 0 has landed; a `.kv` object's header once every
  // piece of it has.
  bool kind_known = false;
  bool is_kv = false;
  uint64_t header_bytes = 0;
  bool header_parsed = false;
  std::vector<BlockEntry> blocks;     // the blocks that have bytes, by offset
  std::vector<uint32_t> block_index;  // each one's index in the header (2 * layer + kind)
  std::vector<uint8_t> block_ok;      // its checksum matched

  // SHA-256 of the pieces in order, as they land (whoever lands one moves it along).
  std::mutex hash_mu;
  std::atomic<bool> rehash{false};
  size_t hash_next = 0;  // under hash_mu
  bool hash_ok = true;
  bool hash_finished = false;
  EVP_MD_CTX* digest = nullptr;
  std::vector<uint8_t> hash_buf;  // a read window, should mapping the staging file fail
  // The same pass sums the `.kv` blocks (xxh3) from the bytes it has just hashed, while they are
  // in the CPU's cache, rather than a reader reading each block again from the page cache. It
  // sums every block that starts at or after `sums_from` (under mu: set when the pass first
  // knows the blocks; a block before it is left to its readers).
  uint64_t sums_from = UINT64_MAX;  // under mu
  size_t sum_next = 0;              // under hash_mu: the first block not summed by the pass
  XXH3_state_t* block_state = nullptr;  // under hash_mu

  bool PiecesLanded(uint64_t from, uint64_t to) const {
    if (to <= from) return true;
    for (size_t p = from / piece_bytes; p <= (to - 1) / piece_bytes; ++p) {
      if (pieces[p] != Piece::kLanded) return false;
    }
    return true;
  }
};

namespace {

constexpr size_t kHashWindow = 1u << 20;  // staging bytes read at a time to hash them
constexpr size_t kWriteBatch = 2u << 20;  // fetched bytes written to the staging file at a time

// Reads exactly `size` bytes at `offset` of `fd` (the staging file; its callers log their own
// error, so only whether it worked matters here).
bool PreadAll(int fd, void* out, size_t size, uint64_t offset) {
  return PreadFull(fd, offset, {static_cast<std::byte*>(out), size}, "staging file").ok();
}

bool PwriteAll(int fd, const uint8_t* p, size_t size, uint64_t offset) {
  return PwriteFull(fd, offset, {reinterpret_cast<const std::byte*>(p), size}, "staging file").ok();
}

// Runs `fn` over the bytes [offset, offset + len) of the staging file: mapped, so that they are
// hashed where they lie in the page cache (no copy), or read in windows of `window` should the
// mapping fail. False when a read or `fn` fails.
template <typename Fn>
bool ForEachStagedSpan(int fd, uint64_t offset, uint64_t len, std::vector<uint8_t>& window, Fn fn) {
  if (len == 0) return true;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const size_t mapped = static_cast<size_t>(len + (offset - start));
  void* m = ::mmap(nullptr, mapped, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(start));
  if (m != MAP_FAILED) {
    (void)::madvise(m, mapped, MADV_SEQUENTIAL);
    const bool ok = fn(static_cast<const uint8_t*>(m) + (offset - start), static_cast<size_t>(len));
    ::munmap(m, mapped);
    return ok;
  }
  if (window.size() < kHashWindow) window.resize(kHashWindow);
  for (uint64_t at = offset; at < offset + len;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kHashWindow, offset + len - at));
    if (!PreadAll(fd, window.data(), n, at) || !fn(window.data(), n)) return false;
    at += n;
  }
  return true;
}

std::string BlockName(uint32_t index) {
  return "block " + std::to_string(index) + " (layer " + std::to_string(index / 2) +
         (index % 2 == 0 ? " K)" : " V)");
}

}  // namespace

OriginReader::~OriginReader() {
  {
    std::lock_guard lock(pool_mu_);
    stop_ = true;
  }
  pool_cv_.notify_all();
  for (std::thread& t : pool_) t.join();
  std::lock_guard lock(mu_);
  for (auto& [ino, f] : fetches_) {
    std::lock_guard fl(f->mu);
    if (f->phase != InFlight::Phase::kCommitted) ::unlink(f->staged.c_str());
  }
}

void OriginReader::WakePool() {
  { std::lock_guard lock(pool_mu_); }
  pool_cv_.notify_all();
}

Result<std::shared_ptr<OriginReader::InFlight>> OriginReader::Join(Ino ino, InodeAttr* committed) {
  {
    std::lock_guard lock(mu_);
    if (auto it = fetches_.find(ino); it != fetches_.end()) return it->second;
  }
  std::shared_ptr<InFlight> f;
  {
    std::lock_guard start(start_mu_);
    {
      std::lock_guard lock(mu_);
      if (auto it = fetches_.find(ino); it != fetches_.end()) return it->second;
    }
    KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_.GetAttr(ino));
    *committed = attr;
    if (!S_ISREG(attr.mode) || !attr.chunk.IsZero()) return f;  // has content
    KDN_ASSIGN_OR_RETURN(std::optional<Remote> remote, LoadRemote(ino));
    if (!remote || remote->object.chunk.IsZero()) return f;  // local, or empty on the origin
    f = std::make_shared<InFlight>();
    f->ino = ino;
    f->object = remote->object;
    f->key = ChunkKey(f->object.chunk);
    f->size = f->object.size;
    f->piece_bytes = std::max<uint64_t>(options_.piece_bytes, 4096);
    f->n_pieces = static_cast<size_t>((f->size + f->piece_bytes - 1) / f->piece_bytes);
    f->pieces.assign(f->n_pieces, InFlight::Piece::kMissing);
    f->started = f->last_progress = std::chrono::steady_clock::now();
    f->staged = store_.NewStagingPath();
    f->fd = ::open(f->staged.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    std::string why;
    if (f->fd < 0) {
      why = std::string("staging file: ") + std::strerror(errno);
    } else {
      f->block_state = XXH3_createState();  // without it, readers sum every block themselves
      f->digest = EVP_MD_CTX_new();
      if (f->digest == nullptr || EVP_DigestInit_ex(f->digest, EVP_sha256(), nullptr) != 1) {
        why = "SHA-256 unavailable";
        ::unlink(f->staged.c_str());
      }
    }
    if (!why.empty()) {
      ++counters_.fetch_errors;
      Log(options_.log, LogLevel::kError, "origin fetch of " + f->key + ": " + why);
      return Eio("origin fetch of " + f->key + ": " + why);
    }
    if (f->n_pieces > 0) {
      f->urgent.push_back(0);  // what the content is, and a `.kv` header, first
    } else {
      f->kind_known = true;  // an empty object: nothing to fetch, only its hash to check
    }
    ++counters_.fetches_running;
    std::lock_guard lock(mu_);
    fetches_[ino] = f;
  }
  if (f->n_pieces == 0) {
    AdvanceHash(f);
  } else {
    {
      std::lock_guard lock(pool_mu_);
      active_.push_back(f);
    }
    pool_cv_.notify_all();
  }
  return f;
}

void OriginReader::PoolThread() {
  for (;;) {
    std::shared_ptr<InFlight> f;
    size_t piece = 0;
    bool commit = false;
    {
      std::unique_lock lock(pool_mu_);
      pool_cv_.wait(lock, [&] { return stop_ || TakeWork(&f, &piece, &commit); });
      if (stop_) return;
    }
    if (commit) {
      CommitFetched(f);
      continue;
    }
    LandPiece(f, piece);
  }
}

bool OriginReader::TakeWork(std::shared_ptr<InFlight>* fetch, size_t* piece, bool* commit) {
  if (!to_commit_.empty()) {
    *fetch = std::move(to_commit_.back());
    to_commit_.pop_back();
    *commit = true;
    return true;
  }
  while (!active_.empty()) {
    if (next_active_ >= active_.size()) next_active_ = 0;
    std::shared_ptr<InFlight>& f = active_[next_active_];
    std::optional<size_t> took;
    {
      std::lock_guard lock(f->mu);
      if (f->phase == InFlight::Phase::kFetching) {
        while (!took && !f->urgent.empty()) {
          size_t p = f->urgent.front();
          f->urgent.pop_front();
          if (f->pieces[p] == InFlight::Piece::kMissing) took = p;
        }
        while (!took && f->next_in_order < f->n_pieces) {
          if (f->pieces[f->next_in_order] == InFlight::Piece::kMissing) took = f->next_in_order;
          ++f->next_in_order;
        }
        if (took) f->pieces[*took] = InFlight::Piece::kTaken;
      }
    }
    if (!took) {
      // Nothing of it is left to take (pieces never go back to missing): it leaves the round.
      active_.erase(active_.begin() + static_cast<std::ptrdiff_t>(next_active_));
      continue;
    }
    *fetch = f;
    *piece = *took;
    ++next_active_;  // fetches share the pool, piece by piece
    return true;
  }
  return false;
}

void OriginReader::LandPiece(const std::shared_ptr<InFlight>& f, size_t piece) {
  const uint64_t off = piece * f->piece_bytes;
  const size_t want = static_cast<size_t>(std::min<uint64_t>(f->piece_bytes, f->size - off));
  // From the origin client's receive buffer into the staging file as the bytes arrive, gathered
  // into writes of kWriteBatch: the pieces curl hands over are often a few KiB, and the page
  // cache's cost per write (ext4 write_begin/end per folio) was higher than the copy into a
  // cache-sized buffer (perf of a 1 GiB cold read). No piece-sized buffer.
  thread_local std::vector<uint8_t> batch;
  if (batch.size() < kWriteBatch) batch.resize(kWriteBatch);
  uint64_t batch_at = 0;  // where the batch's bytes go, relative to `off`
  size_t batched = 0;
  int write_errno = 0;
  auto flush = [&] {
    if (batched == 0) return true;
    if (!PwriteAll(f->fd, batch.data(), batched, off + batch_at)) {
      write_errno = errno;
      return false;
    }
    batched = 0;
    return true;
  };
  Result<uint64_t> got = origin_->GetStream(
      f->key, off, want, [&](uint64_t at, std::span<const uint8_t> bytes) {
        // A retried attempt starts again from 0: what was batched goes out first.
        if (batched > 0 && at != batch_at + batched && !flush()) return false;
        if (batched == 0 && bytes.size() >= kWriteBatch) {  // large enough as it is
          if (PwriteAll(f->fd, bytes.data(), bytes.size(), off + at)) return true;
          write_errno = errno;
          return false;
        }
        while (!bytes.empty()) {
          if (batched == 0) batch_at = at;
          const size_t n = std::min(bytes.size(), kWriteBatch - batched);
          std::memcpy(batch.data() + batched, bytes.data(), n);
          batched += n;
          at += n;
          bytes = bytes.subspan(n);
          if (batched == kWriteBatch && !flush()) return false;
        }
        return true;
      });
  if (got.ok()) (void)flush();
  if (write_errno != 0) return Fail(f, std::string("staging write: ") + std::strerror(write_errno));
  if (!got.ok()) return Fail(f, got.status().ToString());
  if (*got != want) {
    return Fail(f, "the object ends at " + std::to_string(off + *got) + " of " +
                       std::to_string(f->size) + " bytes");
  }
  std::string refused;
  bool wake_pool = false;
  {
    std::lock_guard lock(f->mu);
    if (f->phase == InFlight::Phase::kFailed) return;
    f->pieces[piece] = InFlight::Piece::kLanded;
    ++f->landed;
    f->last_progress = std::chrono::steady_clock::now();
    const size_t urgent_before = f->urgent.size();
    ParseHeaderIfReady(*f);
    if (!f->error.empty()) refused = f->error;
    wake_pool = f->urgent.size() > urgent_before;
  }
  f->cv.notify_all();
  if (!refused.empty()) return Fail(f, refused);
  if (wake_pool) WakePool();
  AdvanceHash(f);
}

void OriginReader::ParseHeaderIfReady(InFlight& f) {
  if (f.header_parsed || (f.kind_known && !f.is_kv) || !f.error.empty()) return;
  if (!f.kind_known) {
    if (f.pieces[0] != InFlight::Piece::kLanded) return;
    std::array<std::byte, kKvFixedHeaderBytes> fixed{};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(fixed.size(), f.size));
    if (!PreadAll(f.fd, fixed.data(), n, 0)) {
      f.error = std::string("staging read: ") + std::strerror(errno);
      return;
    }
    f.kind_known = true;
    f.is_kv = HasKvMagic(std::span<const std::byte>(fixed.data(), n));
    if (!f.is_kv) return;
    Result<uint64_t> header_bytes =
        n < kKvFixedHeaderBytes
            ? Result<uint64_t>(Status::Corruption("a .kv object shorter than its fixed header"))
            : KvHeaderBytes(fixed, f.size);
    if (!header_bytes.ok()) {
      f.error = "its .kv header is refused: " + header_bytes.status().ToString();
      return;
    }
    f.header_bytes = *header_bytes;
    // The rest of the header before anything else: no block is served before it is parsed.
    std::vector<size_t> header_pieces;
    for (size_t p = 1; p * f.piece_bytes < f.header_bytes; ++p) {
      if (f.pieces[p] == InFlight::Piece::kMissing) header_pieces.push_back(p);
    }
    f.urgent.insert(f.urgent.begin(), header_pieces.begin(), header_pieces.end());
  }
  if (!f.PiecesLanded(0, f.header_bytes)) return;
  // Bounded: KvHeaderBytes checked the length against the format's limits and the object's size.
  std::vector<std::byte> header(static_cast<size_t>(f.header_bytes));
  if (!PreadAll(f.fd, header.data(), header.size(), 0)) {
    f.error = std::string("staging read: ") + std::strerror(errno);
    return;
  }
  Result<KvHeader> parsed = ParseKvHeader(header, f.size);
  if (!parsed.ok()) {
    f.error = "its .kv header is refused: " + parsed.status().ToString();
    return;
  }
  std::vector<uint32_t> order;
  for (uint32_t i = 0; i < parsed->blocks.size(); ++i) {
    if (parsed->blocks[i].encoded_bytes > 0) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return parsed->blocks[a].offset < parsed->blocks[b].offset;
  });
  for (uint32_t i : order) {
    f.blocks.push_back(parsed->blocks[i]);
    f.block_index.push_back(i);
  }
  f.block_ok.assign(f.blocks.size(), 0);
  f.header_parsed = true;
}

bool OriginReader::HashSpan(InFlight& f, uint64_t at, std::span<const uint8_t> bytes,
                            bool sum_blocks, std::string* refused) {
  // Small enough that the xxh3 of a window reads what SHA-256 has just pulled into the cache.
  constexpr size_t kCacheWindow = 256u << 10;
  for (size_t done = 0; done < bytes.size();) {
    const size_t n = std::min(kCacheWindow, bytes.size() - done);
    const uint8_t* p = bytes.data() + done;
    if (EVP_DigestUpdate(f.digest, p, n) != 1) return false;
    const uint64_t w_begin = at + done;
    const uint64_t w_end = w_begin + n;
    done += n;
    while (sum_blocks && f.sum_next < f.blocks.size()) {
      const BlockEntry& b = f.blocks[f.sum_next];
      const uint64_t b_end = b.offset + b.encoded_bytes;
      if (b.offset >= w_end) break;
      const uint64_t from = std::max(b.offset, w_begin);
      const uint64_t to = std::min(b_end, w_end);
      if (from == b.offset && XXH3_64bits_reset(f.block_state) != XXH_OK) return false;
      if (XXH3_64bits_update(f.block_state, p + (from - w_begin), static_cast<size_t>(to - from)) !=
          XXH_OK) {
        return false;
      }
      if (to < b_end) break;  // the block goes on in the next window
      if (XXH3_64bits_digest(f.block_state) != b.checksum) {
        *refused = BlockName(f.block_index[f.sum_next]) + " at offset " +
                   std::to_string(b.offset) + " does not match its checksum: refused";
        return true;
      }
      {
        std::lock_guard lock(f.mu);
        f.block_ok[f.sum_next] = 1;
      }
      f.cv.notify_all();
      ++f.sum_next;
    }
  }
  return true;
}

void OriginReader::AdvanceHash(const std::shared_ptr<InFlight>& f) {
  // Whoever holds hash_mu hashes every piece that has landed in order; one that finds it held
  // leaves a note (rehash) that the holder reads before it lets go.
  f->rehash.store(true);
  while (f->rehash.load()) {
    if (!f->hash_mu.try_lock()) return;
    f->rehash.store(false);
    bool done = false;
    bool sum_blocks = false;
    for (;;) {
      {
        std::lock_guard lock(f->mu);
        if (f->phase == InFlight::Phase::kFailed) break;
        if (f->hash_next >= f->n_pieces) {
          done = true;
          break;
        }
        if (f->pieces[f->hash_next] != InFlight::Piece::kLanded) break;
        if (f->header_parsed && f->block_state != nullptr && f->sums_from == UINT64_MAX) {
          // The blocks are known from here on: the header was parsed when the last of its
          // pieces landed, and every piece up to this one has; no block starts in a piece
          // hashed before (those hold header bytes only). The pass sums them from here.
          f->sums_from = f->hash_next * f->piece_bytes;
          f->sum_next = static_cast<size_t>(
              std::lower_bound(f->blocks.begin(), f->blocks.end(), f->sums_from,
                               [](const BlockEntry& b, uint64_t pos) { return b.offset < pos; }) -
              f->blocks.begin());
        }
        sum_blocks = f->sums_from != UINT64_MAX;
      }
      const size_t k = f->hash_next;
      const uint64_t begin = k * f->piece_bytes;
      std::string refused;
      const uint64_t end = std::min(f->size, begin + f->piece_bytes);
      uint64_t pos = begin;
      f->hash_ok = f->hash_ok &&
                   ForEachStagedSpan(f->fd, begin, end - begin, f->hash_buf,
                                     [&](const uint8_t* p, size_t n) {
                                       const bool ok =
                                           HashSpan(*f, pos, {p, n}, sum_blocks, &refused);
                                       pos += n;
                                       return ok && refused.empty();
                                     });
      if (!refused.empty()) {
        f->hash_mu.unlock();
        return Fail(f, refused);
      }
      ++f->hash_next;
    }
    const bool finish = done && !f->hash_finished;
    if (finish) f->hash_finished = true;
    f->hash_mu.unlock();
    if (!finish) continue;
    ChunkId got;
    unsigned int len = 0;
    if (!f->hash_ok || EVP_DigestFinal_ex(f->digest, got.bytes.data(), &len) != 1 ||
        len != ChunkId::kBytes || got != f->object.chunk) {
      return Fail(f,
                  "its bytes do not hash to its id (overwritten or damaged on the origin): "
                  "refused");
    }
    {
      std::lock_guard lock(f->mu);
      if (f->phase != InFlight::Phase::kFetching) return;
      f->phase = InFlight::Phase::kVerified;
    }
    f->cv.notify_all();
    {
      std::lock_guard lock(pool_mu_);
      to_commit_.push_back(f);
    }
    pool_cv_.notify_all();
    return;
  }
}

void OriginReader::CommitFetched(const std::shared_ptr<InFlight>& f) {
  // A listing may have made the file a placeholder of another object while this one arrived:
  // then these bytes are no longer its content.
  Result<std::optional<Remote>> remote = LoadRemote(f->ino);
  if (!remote.ok() || !*remote || (*remote)->object.chunk != f->object.chunk) {
    return Fail(f, "the file changed on the origin while it was fetched: not kept");
  }
  // The staging file hashed to the object's id (AdvanceHash, from this very file, which only this
  // fetch writes): the store takes it as the chunk file as it is, without copying it or hashing
  // it again. `.kv` content must still pass every check of the store before it is kept.
  CommitOptions commit;
  commit.mtime_ns = f->object.mtime_ns;
  Result<InodeAttr> committed =
      store_.CommitHashedFile(f->ino, f->staged, f->object.chunk, commit);
  if (!committed.ok()) return Fail(f, "refused by the store: " + committed.status().ToString());
  // Its bytes are on the origin: the local copy is cache.
  (void)store_.SetEvictable(f->ino, true);
  Result<InodeAttr> attr = store_.GetAttr(f->ino);
  ++counters_.fetches;
  counters_.fetch_bytes += f->size;
  counters_.fetch_ns_total +=
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - f->started)
                                .count());
  {
    std::lock_guard lock(f->mu);
    f->phase = InFlight::Phase::kCommitted;
    f->committed = attr.ok() ? *attr : *committed;
  }
  f->cv.notify_all();
  Forget(f);
}

void OriginReader::Fail(const std::shared_ptr<InFlight>& f, const std::string& why) {
  {
    std::lock_guard lock(f->mu);
    if (f->phase == InFlight::Phase::kFailed || f->phase == InFlight::Phase::kCommitted) return;
    // Counted, logged and cleaned up before any reader can see the failure.
    ++counters_.fetch_errors;
    Log(options_.log, LogLevel::kError,
        "origin fetch of " + f->key + ": " + why + " (nothing cached; the next read tries again)");
    ::unlink(f->staged.c_str());
    f->phase = InFlight::Phase::kFailed;
    f->error = why;
  }
  f->cv.notify_all();
  Forget(f);
}

void OriginReader::Forget(const std::shared_ptr<InFlight>& f) {
  {
    std::lock_guard start(start_mu_);
    std::lock_guard lock(mu_);
    auto it = fetches_.find(f->ino);
    if (it != fetches_.end() && it->second == f) fetches_.erase(it);
  }
  --counters_.fetches_running;
}

bool OriginReader::PaddingIsZero(const InFlight& f, uint64_t offset,
                                 std::span<const std::byte> bytes) {
  const uint64_t end = offset + bytes.size();
  uint64_t at = std::max(offset, f.header_bytes);
  // The first block that ends after `at`.
  auto it = std::upper_bound(f.blocks.begin(), f.blocks.end(), at,
                             [](uint64_t pos, const BlockEntry& b) { return pos < b.offset; });
  if (it != f.blocks.begin() && std::prev(it)->offset + std::prev(it)->encoded_bytes > at) --it;
  while (at < end) {
    if (it != f.blocks.end() && it->offset <= at) {
      at = it->offset + it->encoded_bytes;
      ++it;
      continue;
    }
    const uint64_t gap_end = std::min(end, it == f.blocks.end() ? end : it->offset);
    for (uint64_t p = at; p < gap_end; ++p) {
      if (bytes[p - offset] != std::byte{0}) return false;
    }
    at = gap_end;
  }
  return true;
}

Status OriginReader::Await(std::unique_lock<std::mutex>& lock, const std::shared_ptr<InFlight>& f,
                           uint64_t from, uint64_t to, const std::function<bool()>& ready) {
  using Phase = InFlight::Phase;
  bool asked = false;
  // A reader gets the whole timeout from its own start, even behind a fetch long stalled.
  const auto arrived = std::chrono::steady_clock::now();
  for (;;) {
    if (f->phase == Phase::kFailed) return Eio("origin fetch of " + f->key + ": " + f->error);
    if (f->phase == Phase::kCommitted || ready()) return Status::OK();
    // The range's first missing piece is fetched here, the rest goes first in the pool's queue.
    std::optional<size_t> mine;
    std::vector<size_t> queued;
    if (to > from) {
      for (size_t p = from / f->piece_bytes; p <= (to - 1) / f->piece_bytes; ++p) {
        if (f->pieces[p] != InFlight::Piece::kMissing) continue;
        if (!mine) {
          mine = p;
          f->pieces[p] = InFlight::Piece::kTaken;
        } else if (!asked) {
          queued.push_back(p);
        }
      }
    }
    if (!queued.empty()) f->urgent.insert(f->urgent.begin(), queued.begin(), queued.end());
    asked = asked || !queued.empty();
    if (mine || !queued.empty()) {
      lock.unlock();
      if (!queued.empty()) WakePool();
      if (mine) LandPiece(f, *mine);
      lock.lock();
      continue;
    }
    if (f->phase == Phase::kVerified) {
      f->cv.wait(lock);  // the commit: local work, no origin
      continue;
    }
    const auto deadline = std::max(arrived, f->last_progress) + options_.read_timeout;
    if (std::chrono::steady_clock::now() >= deadline) {
      const std::string why =
          "no bytes arrived for " + std::to_string(options_.read_timeout.count()) +
          " ms (the origin is slow or down; this read fails, the fetch goes on)";
      ++counters_.fetch_errors;
      Log(options_.log, LogLevel::kError, "origin fetch of " + f->key + ": " + why);
      return Eio("origin fetch of " + f->key + ": " + why);
    }
    f->cv.wait_until(lock, deadline);
  }
}

Result<MissRead> OriginReader::Serve(const std::shared_ptr<InFlight>& f, uint64_t offset,
                                     std::span<std::byte> out) {
  using Phase = InFlight::Phase;
  std::unique_lock lock(f->mu);
  auto committed = [&]() -> std::optional<MissRead> {
    if (f->phase != Phase::kCommitted) return std::nullopt;
    return MissRead{f->committed, 0};
  };
  if (offset >= f->size || out.empty()) return MissRead{};
  const uint64_t end = std::min<uint64_t>(f->size, offset + out.size());
  // What the content is (and a `.kv` header, parsed and checked) before anything else.
  KDN_RETURN_IF_ERROR(Await(lock, f, 0, std::min<uint64_t>(f->size, kKvFixedHeaderBytes),
                            [&] { return f->kind_known; }));
  if (auto c = committed()) return *c;
  if (f->is_kv) {
    KDN_RETURN_IF_ERROR(Await(lock, f, 0, f->header_bytes, [&] { return f->header_parsed; }));
    if (auto c = committed()) return *c;
  }
  std::vector<size_t> to_check;  // blocks the range touches whose checksum is not checked yet
  if (!f->is_kv) {
    // No per-block checksum to check: served once the whole object hashes to its id.
    KDN_RETURN_IF_ERROR(Await(lock, f, offset, end, [&] { return f->phase == Phase::kVerified; }));
  } else {
    // Every block the range touches, whole.
    uint64_t from = offset, to = end;
    auto first = std::upper_bound(f->blocks.begin(), f->blocks.end(), offset,
                                  [](uint64_t pos, const BlockEntry& b) { return pos < b.offset; });
    if (first != f->blocks.begin()) --first;
    for (auto it = first; it != f->blocks.end() && it->offset < end; ++it) {
      if (it->offset + it->encoded_bytes <= offset) continue;
      from = std::min(from, it->offset);
      to = std::max(to, it->offset + it->encoded_bytes);
      const size_t i = static_cast<size_t>(it - f->blocks.begin());
      if (!f->block_ok[i]) to_check.push_back(i);
    }
    KDN_RETURN_IF_ERROR(Await(lock, f, from, to, [&] { return f->PiecesLanded(from, to); }));
    // Once every byte is here, nothing is served before the whole object matched its id.
    if (f->landed == f->n_pieces) {
      KDN_RETURN_IF_ERROR(Await(lock, f, 0, 0, [&] { return f->phase == Phase::kVerified; }));
    }
  }
  if (auto c = committed()) return *c;
  if (!to_check.empty()) {
    // A block the hashing pass reaches without waiting for any other piece is summed by it from
    // the bytes it hashes anyway: waiting for it costs no more than that pass, and saves reading
    // the block again. The pass only ever moves on (every landing drives it), or the fetch fails.
    auto pass_will_sum = [&](size_t i) {
      const BlockEntry& b = f->blocks[i];
      return !f->block_ok[i] && b.offset >= f->sums_from &&
             f->PiecesLanded(0, b.offset + b.encoded_bytes);
    };
    f->cv.wait(lock, [&] {
      return f->phase == Phase::kFailed || f->phase == Phase::kCommitted ||
             std::none_of(to_check.begin(), to_check.end(), pass_will_sum);
    });
    if (f->phase == Phase::kFailed) return Eio("origin fetch of " + f->key + ": " + f->error);
    if (auto c = committed()) return *c;
    std::erase_if(to_check, [&](size_t i) { return f->block_ok[i] != 0; });
  }
  lock.unlock();
  thread_local std::vector<uint8_t> window;
  for (size_t i : to_check) {
    const BlockEntry& b = f->blocks[i];
    XXH3_state_t* state = XXH3_createState();
    bool read_ok = state != nullptr && XXH3_64bits_reset(state) == XXH_OK &&
                   ForEachStagedSpan(f->fd, b.offset, b.encoded_bytes, window,
                                     [&](const uint8_t* p, size_t n) {
                                       return XXH3_64bits_update(state, p, n) == XXH_OK;
                                     });
    const bool match = read_ok && XXH3_64bits_digest(state) == b.checksum;
    XXH3_freeState(state);
    if (!match) {
      const std::string why = BlockName(f->block_index[i]) + " at offset " +
                              std::to_string(b.offset) + " does not match its checksum: refused";
      Fail(f, why);
      return Eio("origin fetch of " + f->key + ": " + why);
    }
    std::lock_guard relock(f->mu);
    f->block_ok[i] = 1;
  }
  const size_t n = static_cast<size_t>(end - offset);
  if (!PreadAll(f->fd, out.data(), n, offset)) {
    return Eio("origin fetch of " + f->key + ": staging read: " + std::strerror(errno));
  }
  if (f->is_kv && !PaddingIsZero(*f, offset, out.first(n))) {
    const std::string why =
        "padding between blocks near offset " + std::to_string(offset) + " is not zero: refused";
    Fail(f, why);
    return Eio("origin fetch of " + f->key + ": " + why);
  }
  ++counters_.reads_before_commit;
  return MissRead{std::nullopt, n};
}

Result<MissRead> OriginReader::Read(Ino ino, uint64_t offset, std::span<std::byte> out) {
  InodeAttr committed;
  KDN_ASSIGN_OR_RETURN(std::shared_ptr<InFlight> f, Join(ino, &committed));
  if (!f) return MissRead{committed, 0};
  return Serve(f, offset, out);
}

void OriginReader::Prefetch(Ino ino) {
  InodeAttr committed;
  (void)Join(ino, &committed);
}

Result<InodeAttr> OriginReader::Fetch(Ino ino) {
  InodeAttr committed;
  KDN_ASSIGN_OR_RETURN(std::shared_ptr<InFlight> f, Join(ino, &committed));
  if (!f) return committed;
  std::unique_lock lock(f->mu);
  KDN_RETURN_IF_ERROR(
      Await(lock, f, 0, 0, [&] { return f->phase == InFlight::Phase::kCommitted; }));
  return f->committed;
}

}  // namespace kdn::edge
