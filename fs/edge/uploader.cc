#include "fs/edge/uploader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <random>
#include <vector>

#include "fs/edge/ns_object.h"
#include "fs/edge/origin_gc.h"

namespace kdn::edge {
namespace {

// Note bodies: a kind letter, then NUL-separated fields (paths hold any byte but NUL).
constexpr char kPut = 'P', kDelete = 'D', kRename = 'R', kExchange = 'X', kMetadata = 'M',
               kMakeDir = 'K', kRemoveDir = 'E';
constexpr size_t kBatch = 64;
constexpr size_t kMaxKnownUploaded = 100000;

std::vector<std::string_view> Fields(std::string_view body) {
  std::vector<std::string_view> out;
  size_t start = 1;
  while (start <= body.size()) {
    size_t nul = body.find('\0', start);
    if (nul == std::string_view::npos) nul = body.size();
    out.push_back(body.substr(start, nul - start));
    start = nul + 1;
  }
  return out;
}

std::string Join(char kind, std::initializer_list<std::string_view> fields) {
  std::string out(1, kind);
  bool first = true;
  for (std::string_view f : fields) {
    if (!first) out.push_back('\0');
    out += f;
    first = false;
  }
  return out;
}

}  // namespace

std::string PutNote(Ino ino, std::string_view path) {
  return Join(kPut, {std::to_string(ino), path});
}
std::string DeleteNote(std::string_view path) {
  return Join(kDelete, {path});
}
std::string RenameNote(std::string_view from, std::string_view to) {
  return Join(kRename, {from, to});
}
std::string ExchangeNote(std::string_view a, std::string_view b) {
  return Join(kExchange, {a, b});
}
std::string MetadataNote(Ino ino, std::string_view path) {
  return Join(kMetadata, {std::to_string(ino), path});
}

std::string MakeDirNote(std::string_view path) {
  return Join(kMakeDir, {path});
}
std::string RemoveDirNote(std::string_view path) {
  return Join(kRemoveDir, {path});
}

bool Publishable(std::string_view path) {
  if (!path.starts_with('/') || path.size() < 2) return false;
  size_t at = 1;
  while (at < path.size()) {
    size_t slash = path.find('/', at);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view component = path.substr(at, slash - at);
    if (component.starts_with(".kdn-tmp") || component == kDirMarkerName) return false;
    at = slash + 1;
  }
  return origin::CheckKey(NsKey(path)).ok();
}

Uploader::Uploader(Store& store, std::shared_ptr<origin::Origin> origin, UploaderOptions options)
    : store_(store), origin_(std::move(origin)), options_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

Uploader::~Uploader() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Uploader::Kick() {
  {
    std::lock_guard lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

std::string Uploader::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void Uploader::NoteError(const Status& s) {
  ++counters_.errors;
  Log(options_.log, LogLevel::kError, "origin upload: " + s.ToString() + " (will retry)");
  {
    std::lock_guard lock(mu_);
    last_error_ = s.ToString();
  }
  done_cv_.notify_all();
}

bool Uploader::KnownUploaded(const ChunkId& id) {
  std::lock_guard lock(mu_);
  auto it = uploaded_.find(id);
  return it != uploaded_.end() && std::chrono::steady_clock::now() < it->second;
}

void Uploader::MarkUploaded(const ChunkId& id, std::chrono::seconds age) {
  std::lock_guard lock(mu_);
  if (uploaded_.size() >= kMaxKnownUploaded) uploaded_.clear();
  uploaded_[id] = std::chrono::steady_clock::now() + (kChunkRefreshAge - age);
}

void Uploader::Loop() {
  std::mt19937_64 rng(std::random_device{}());
  std::chrono::milliseconds backoff{0};
  while (true) {
    {
      std::unique_lock lock(mu_);
      // After a failure, only stopping cuts the backoff short; otherwise a kick or a 1 s poll.
      auto wait = backoff.count() > 0 ? backoff : std::chrono::milliseconds(1000);
      // A sync cuts a backoff short (someone waits for the origin now); commits do not, or a
      // down origin would be retried at the rate files are written.
      cv_.wait_for(lock, wait,
                   [&] { return stop_ || urgent_ || (backoff.count() == 0 && kicked_); });
      if (stop_) return;
      kicked_ = false;
      urgent_ = false;
    }
    Status s = RunBatch();
    if (s.ok()) {
      backoff = std::chrono::milliseconds(0);
      continue;
    }
    NoteError(s);
    auto next = backoff.count() == 0 ? options_.backoff_base : backoff * 2;
    next = std::min(next, options_.backoff_max);
    std::uniform_int_distribution<int64_t> jitter(next.count() / 2, next.count());
    backoff = std::chrono::milliseconds(jitter(rng));
  }
}

Status Uploader::RunBatch() {
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stop_) return Status::OK();
    }
    KDN_ASSIGN_OR_RETURN(std::vector<OutboxNote> notes, store_.ReadOutbox(0, kBatch));
    if (notes.empty()) return Status::OK();
    // The chunks first, several at once: they are most of the bytes, and any order is right
    // for them (a chunk object is only ever named once it is complete).
    std::vector<ChunkId> chunks;
    for (const OutboxNote& n : notes) {
      if (!n.chunk.IsZero() && !KnownUploaded(n.chunk) &&
          std::find(chunks.begin(), chunks.end(), n.chunk) == chunks.end()) {
        chunks.push_back(n.chunk);
      }
    }
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i = next++; i < chunks.size(); i = next++) {
        Status s = EnsureChunk(chunks[i]);
        if (!s.ok() && !s.IsNotFound()) NoteError(s);  // retried at the note's turn
      }
    };
    std::vector<std::thread> pool;
    const size_t n_threads = std::min<size_t>(std::max(1u, options_.threads), chunks.size());
    for (size_t i = 1; i < n_threads; ++i) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    // Then the names, in order.
    for (const OutboxNote& n : notes) {
      KDN_RETURN_IF_ERROR(Handle(n));
      KDN_RETURN_IF_ERROR(store_.RemoveOutboxNote(n.seq));
      ++counters_.notes_done;
      done_cv_.notify_all();
    }
  }
}

Result<bool> Uploader::FreshOnOrigin(const ChunkId& id) {
  if (KnownUploaded(id)) return true;
  const std::string key = ChunkKey(id);
  Result<origin::ObjectInfo> head = origin_->Head(key);
  if (head.status().IsNotFound()) return false;
  KDN_RETURN_IF_ERROR(head.status());
  ++counters_.chunk_present;
  // Not uploaded again, so the chunk's write time is the one it had: if it is old, the collector
  // may have found it unnamed and be about to delete it. Refreshed, it is young again, and the
  // collector checks that just before it deletes (fs/edge/origin_gc.h). An age the origin does
  // not tell counts as old; one in the future (clocks apart) as none.
  const int64_t age_s = std::max<int64_t>(0, static_cast<int64_t>(std::time(nullptr)) - head->mtime_s);
  if (head->mtime_s > 0 && age_s < kChunkRefreshAge.count()) {
    MarkUploaded(id, std::chrono::seconds(age_s));
    return true;
  }
  Status touched = origin_->Touch(key);
  if (touched.ok()) {
    ++counters_.chunk_refreshes;
    MarkUploaded(id);
    return true;
  }
  // Too large to refresh in place, or deleted since the HEAD: the caller puts it (again).
  if (touched.code() == Code::kUnsupported || touched.IsNotFound()) return false;
  return touched;
}

Status Uploader::EnsureChunk(const ChunkId& id) {
  KDN_ASSIGN_OR_RETURN(bool fresh, FreshOnOrigin(id));
  if (fresh) return Status::OK();
  const std::string key = ChunkKey(id);
  // A chunk that is gone from the store was replaced or deleted since: a later note covers it.
  KDN_ASSIGN_OR_RETURN(int fd, store_.OpenChunkForRead(id));
  struct stat st {};
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = Status::FromErrno("stat of chunk " + id.ToHex(), errno);
  } else {
    s = origin_->PutFile(key, fd, static_cast<uint64_t>(st.st_size));
  }
  ::close(fd);
  KDN_RETURN_IF_ERROR(s);
  ++counters_.chunk_uploads;
  counters_.upload_bytes += static_cast<uint64_t>(st.st_size);
  MarkUploaded(id);
  return Status::OK();
}

Result<InodeAttr> Uploader::Resolve(std::string_view path) {
  Ino at = kRootIno;
  InodeAttr attr;
  size_t pos = 1;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    KDN_ASSIGN_OR_RETURN(attr, store_.Lookup(at, path.substr(pos, slash - pos)));
    at = attr.ino;
    pos = slash + 1;
  }
  return attr;
}

Status Uploader::Publish(std::string_view path, const InodeAttr& attr_in) {
  if (!Publishable(path)) return Status::OK();
  InodeAttr attr = attr_in;
  if (attr.chunk.IsZero() && attr.size == 0) {
    // A placeholder of an origin object (renamed here before it was ever read): its content is
    // the object's, already on the origin, not an empty file.
    Result<std::string> record = store_.GetXattr(attr.ino, kRemoteXattr);
    if (record.ok()) {
      std::optional<NsObject> remote = NsObjectOfRecord(*record);
      if (!remote)
        return Status::Corruption("damaged origin record of inode " + std::to_string(attr.ino));
      attr.chunk = remote->chunk;
      attr.size = remote->size;
      attr.mtime_ns = remote->mtime_ns;
      // Not marked uploaded: the name this node knew it by may be gone and its chunk old, so
      // EnsureChunk below HEADs it (and refreshes it) like any other before it gets this name.
    }
  }
  if (!attr.chunk.IsZero()) {
    Status s = EnsureChunk(attr.chunk);
    // The content changed again since (its chunk is gone): the later note publishes that.
    if (s.IsNotFound()) return Status::OK();
    KDN_RETURN_IF_ERROR(s);
  }
  NsObject o;
  o.chunk = attr.chunk;
  o.size = attr.size;
  o.mode = attr.mode;
  o.uid = attr.uid;
  o.gid = attr.gid;
  o.mtime_ns = attr.mtime_ns;
  o.ctime_ns = attr.ctime_ns;
  Result<std::vector<std::string>> names = store_.ListXattr(attr.ino);
  if (names.ok()) {
    std::sort(names->begin(), names->end());
    for (const std::string& name : *names) {
      // user.kdn.* follow from the content or are this node's own settings.
      if (!name.starts_with("user.") || name.starts_with("user.kdn.")) continue;
      Result<std::string> value = store_.GetXattr(attr.ino, name);
      if (value.ok()) o.xattrs.emplace_back(name, std::move(*value));
    }
  }
  const std::string bytes = EncodeNsObject(o);
  KDN_RETURN_IF_ERROR(origin_->Put(
      NsKey(path), std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
  ++counters_.ns_puts;
  counters_.upload_bytes += bytes.size();
  return Status::OK();
}

Status Uploader::PublishAllNames(const InodeAttr& attr) {
  // Every name (a file has at most kMaxLinks): a name left out would keep older content, or none,
  // on the other nodes.
  KDN_ASSIGN_OR_RETURN(std::vector<std::string> paths, store_.PathsOf(attr.ino, kMaxLinks));
  for (const std::string& path : paths) {
    // Each name its own namespace object, all naming the one chunk (uploaded once).
    if (Publishable(path)) KDN_RETURN_IF_ERROR(Publish(path, attr));
  }
  return Status::OK();
}

Status Uploader::PutDirMarker(std::string_view path, const InodeAttr& attr) {
  if (!Publishable(path)) return Status::OK();
  const std::string bytes =
      EncodeDirMarker(attr.mode, attr.uid, attr.gid, attr.mtime_ns, attr.ctime_ns);
  KDN_RETURN_IF_ERROR(origin_->Put(
      DirMarkerKey(path), std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
  ++counters_.ns_puts;
  counters_.upload_bytes += bytes.size();
  return Status::OK();
}

Status Uploader::PutDirMarkers(std::string_view path, Ino dir, int depth) {
  if (depth > 256) return Status::OK();  // deeper trees keep the markers they have
  KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_.GetAttr(dir));
  KDN_RETURN_IF_ERROR(PutDirMarker(path, attr));
  for (uint64_t cookie = 0;;) {
    KDN_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, store_.ReadDir(dir, cookie, 1024));
    if (entries.empty()) return Status::OK();
    for (const DirEntry& e : entries) {
      cookie = e.cookie;
      if (!S_ISDIR(e.attr.mode) || e.name == "." || e.name == "..") continue;
      KDN_RETURN_IF_ERROR(PutDirMarkers(std::string(path) + "/" + e.name, e.attr.ino, depth + 1));
    }
  }
}

Status Uploader::MoveTree(std::string_view from, std::string_view to) {
  // A directory is a prefix on the origin: each object under it is copied, then deleted.
  const std::string from_prefix = NsKey(from) + "/";
  KDN_ASSIGN_OR_RETURN(origin::ListPage page, origin_->ListAll(from_prefix, ""));
  for (const origin::ObjectInfo& obj : page.objects) {
    std::string bytes(obj.size, '\0');
    KDN_ASSIGN_OR_RETURN(
        uint64_t got,
        origin_->Get(obj.key, 0,
                     std::span(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size())));
    bytes.resize(got);
    // A new name for the chunk, like any other (EnsureChunk): refreshed first if old. The chunk
    // need not be here, so one the origin lost is moved as it is (the name was broken already).
    Result<NsObject> moved = DecodeNsObject(bytes);
    if (moved.ok() && !moved->chunk.IsZero()) KDN_RETURN_IF_ERROR(FreshOnOrigin(moved->chunk).status());
    const std::string new_key = NsKey(to) + "/" + obj.key.substr(from_prefix.size());
    KDN_RETURN_IF_ERROR(origin_->Put(
        new_key, std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
    KDN_RETURN_IF_ERROR(origin_->Delete(obj.key));
    ++counters_.ns_puts;
    ++counters_.ns_deletes;
  }
  return Status::OK();
}

Status Uploader::Handle(const OutboxNote& note) {
  if (note.body.empty()) return Status::OK();
  std::vector<std::string_view> f = Fields(note.body);
  auto remove = [&](std::string_view path) -> Status {
    if (!Publishable(path)) return Status::OK();
    KDN_RETURN_IF_ERROR(origin_->Delete(NsKey(path)));
    ++counters_.ns_deletes;
    return Status::OK();
  };
  switch (note.body[0]) {
    case kPut: {
      if (f.size() != 2) break;
      Ino ino = std::strtoull(std::string(f[0]).c_str(), nullptr, 10);
      Result<InodeAttr> attr = store_.GetAttr(ino);
      if (!attr.ok()) return attr.status().IsNotFound() ? Status::OK() : attr.status();
      // Changed again since: the later note publishes the newer content.
      if (!S_ISREG(attr->mode) || attr->chunk != note.chunk) return Status::OK();
      // Under every name it has now: a name it lost since has its own later note.
      KDN_RETURN_IF_ERROR(PublishAllNames(*attr));
      // Its bytes are on the origin now: the local copy is cache, evicted (LRU) when the store
      // is full and fetched again when read (user.kdn.pin keeps it).
      if (!attr->chunk.IsZero() && KnownUploaded(attr->chunk)) {
        (void)store_.SetEvictable(ino, true);
      }
      return Status::OK();
    }
    case kMetadata: {
      // The file as it is now, under every name it has now (a new hard link is one of them; a
      // later note covers a later name or content).
      if (f.size() != 2) break;
      Ino ino = std::strtoull(std::string(f[0]).c_str(), nullptr, 10);
      Result<InodeAttr> now = store_.GetAttr(ino);
      if (!now.ok()) return now.status().IsNotFound() ? Status::OK() : now.status();
      // A directory's mode or owner: its marker, at the path it has now (one moved since has a
      // later rename note, which puts the markers of what it moved).
      if (S_ISDIR(now->mode)) {
        Result<std::string> path = store_.PathOf(ino);
        if (!path.ok()) return path.status().IsNotFound() ? Status::OK() : path.status();
        return PutDirMarker(*path, *now);
      }
      if (!S_ISREG(now->mode)) return Status::OK();
      return PublishAllNames(*now);
    }
    case kMakeDir: {
      // A directory still there; one renamed or removed before this note's turn has a later
      // note (a rename puts the markers of what it moved).
      if (f.size() != 1) break;
      Result<InodeAttr> now = Resolve(f[0]);
      if (!now.ok()) return now.status().IsNotFound() ? Status::OK() : now.status();
      if (!S_ISDIR(now->mode)) return Status::OK();
      return PutDirMarker(f[0], *now);
    }
    case kRemoveDir:
      if (f.size() != 1) break;
      if (!Publishable(f[0])) return Status::OK();
      KDN_RETURN_IF_ERROR(origin_->Delete(DirMarkerKey(f[0])));
      ++counters_.ns_deletes;
      return Status::OK();
    case kDelete:
      if (f.size() != 1) break;
      return remove(f[0]);
    case kRename: {
      if (f.size() != 2) break;
      Result<InodeAttr> now = Resolve(f[1]);
      if (now.ok() && S_ISREG(now->mode)) {
        KDN_RETURN_IF_ERROR(Publish(f[1], *now));
        return remove(f[0]);
      }
      if (!now.ok() && !now.status().IsNotFound()) return now.status();
      // A directory (or a name gone again since): move what the origin has under the old name.
      if (Publishable(f[0]) && Publishable(f[1])) KDN_RETURN_IF_ERROR(MoveTree(f[0], f[1]));
      // Directories made and moved before their markers were put: theirs were skipped.
      if (now.ok() && S_ISDIR(now->mode)) KDN_RETURN_IF_ERROR(PutDirMarkers(f[1], now->ino, 0));
      return remove(f[0]);
    }
    case kExchange: {
      if (f.size() != 2) break;
      for (std::string_view path : {f[0], f[1]}) {
        Result<InodeAttr> now = Resolve(path);
        if (now.ok() && S_ISREG(now->mode)) KDN_RETURN_IF_ERROR(Publish(path, *now));
      }
      return Status::OK();
    }
    default:
      break;
  }
  // A note this build does not understand cannot become understandable by retrying.
  Log(options_.log, LogLevel::kError,
      "origin upload: dropping malformed outbox note " + std::to_string(note.seq));
  return Status::OK();
}

Status Uploader::WaitUploaded() {
  KDN_ASSIGN_OR_RETURN(Store::OutboxState state, store_.GetOutboxState());
  if (state.notes == 0) return Status::OK();
  const uint64_t target = state.last_seq;
  {
    std::lock_guard lock(mu_);
    urgent_ = true;
  }
  cv_.notify_all();
  const auto deadline = std::chrono::steady_clock::now() + options_.sync_timeout;
  while (true) {
    KDN_ASSIGN_OR_RETURN(state, store_.GetOutboxState());
    if (state.notes == 0 || state.first_seq > target) return Status::OK();
    std::unique_lock lock(mu_);
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::IOError(
          "origin " + origin_->Describe() + ": uploads not done after " +
          std::to_string(options_.sync_timeout.count()) + " ms (" + std::to_string(state.notes) +
          " changes wait); last error: " + (last_error_.empty() ? "none" : last_error_));
    }
    done_cv_.wait_for(lock, std::chrono::milliseconds(100));
  }
}

Result<std::string> Uploader::UploadState(const InodeAttr& attr) {
  if (attr.chunk.IsZero()) return std::string("local");
  KDN_ASSIGN_OR_RETURN(bool pending, store_.OutboxNamesChunk(attr.chunk));
  return std::string(pending ? "pending" : "uploaded");
}

}  // namespace kdn::edge
