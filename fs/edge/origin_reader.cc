#include "fs/edge/origin_reader.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace kdn::edge {
namespace {

constexpr size_t kFetchPiece = 16u << 20;  // bytes per ranged GET of a fetch
constexpr size_t kMaxRemembered = 100000;  // remote_ entries before the cache starts over
constexpr size_t kReadDirPage = 1024;
// Permission bits taken from an origin object: never setuid, setgid or sticky, since whoever can
// write to the origin must not be able to plant a setuid file on every node.
constexpr uint32_t kOriginModeBits = 0777;

Status Eio(const std::string& why) {
  return Status::FromErrno(why, EIO);
}

struct DigestCtx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~DigestCtx() { EVP_MD_CTX_free(ctx); }
};

}  // namespace

OriginReader::OriginReader(Store& store, std::shared_ptr<origin::Origin> origin,
                           ReaderOptions options, ForgetFn forget, HoldFn hold)
    : store_(store),
      origin_(std::move(origin)),
      options_(std::move(options)),
      forget_(std::move(forget)),
      hold_(std::move(hold)) {}

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
      node.mode = S_IFDIR | 0755;
      node.uid = dir_attr->uid;
      node.gid = dir_attr->gid;
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
        if (!record.ok() || *record != kRemoteDirRecord) continue;
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
      if (record.ok() && *record == kRemoteDirRecord)
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

std::shared_ptr<std::mutex> OriginReader::FetchLock(Ino ino) {
  std::lock_guard lock(mu_);
  std::shared_ptr<std::mutex> m = fetching_[ino].lock();
  if (!m) {
    m = std::make_shared<std::mutex>();
    fetching_[ino] = m;
  }
  // Entries of finished fetches go when the map grows.
  if (fetching_.size() > 1024) {
    for (auto it = fetching_.begin(); it != fetching_.end();) {
      it = it->second.expired() ? fetching_.erase(it) : std::next(it);
    }
  }
  return m;
}

Result<InodeAttr> OriginReader::Fetch(Ino ino) {
  std::shared_ptr<std::mutex> m = FetchLock(ino);
  std::lock_guard one_fetch(*m);
  KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_.GetAttr(ino));
  if (!S_ISREG(attr.mode) || !attr.chunk.IsZero()) return attr;  // fetched by another reader
  KDN_ASSIGN_OR_RETURN(std::optional<Remote> remote, LoadRemote(ino));
  if (!remote || remote->object.chunk.IsZero()) return attr;
  const NsObject& o = remote->object;
  const std::string key = ChunkKey(o.chunk);
  const auto started = std::chrono::steady_clock::now();
  auto fail = [&](const std::string& why) -> Status {
    ++counters_.fetch_errors;
    Log(options_.log, LogLevel::kError, "origin fetch of " + key + ": " + why);
    return Eio("origin fetch of " + key + ": " + why);
  };
  const std::string staged = store_.NewStagingPath();
  int fd = ::open(staged.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail(std::string("staging file: ") + std::strerror(errno));
  DigestCtx digest;
  bool hashing = digest.ctx != nullptr && EVP_DigestInit_ex(digest.ctx, EVP_sha256(), nullptr) == 1;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(kFetchPiece, o.size)));
  uint64_t off = 0;
  std::string error;
  while (hashing && off < o.size && error.empty()) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), o.size - off));
    Result<uint64_t> got = origin_->Get(key, off, std::span(buf.data(), want));
    if (!got.ok()) {
      error = got.status().ToString();
    } else if (*got == 0) {
      error =
          "the object ends at " + std::to_string(off) + " of " + std::to_string(o.size) + " bytes";
    } else if (::pwrite(fd, buf.data(), *got, static_cast<off_t>(off)) !=
               static_cast<ssize_t>(*got)) {
      error = std::string("staging write: ") + std::strerror(errno);
    } else {
      hashing = EVP_DigestUpdate(digest.ctx, buf.data(), *got) == 1;
      off += *got;
    }
  }
  ::close(fd);
  if (!hashing && error.empty()) error = "SHA-256 unavailable";
  if (error.empty()) {
    ChunkId got_id;
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(digest.ctx, got_id.bytes.data(), &len) != 1 || len != ChunkId::kBytes ||
        got_id != o.chunk) {
      error = "its bytes do not hash to its id (overwritten or damaged on the origin): refused";
    }
  }
  if (!error.empty()) {
    ::unlink(staged.c_str());
    return fail(error);
  }
  // Committed as any local content is: `.kv` content must pass every check before it is kept.
  CommitOptions commit;
  commit.mtime_ns = o.mtime_ns;
  Result<InodeAttr> committed = store_.CommitFileContent(ino, staged, commit);
  if (!committed.ok()) {
    ::unlink(staged.c_str());
    return fail("refused by the store: " + committed.status().ToString());
  }
  // Its bytes are on the origin: the local copy is cache.
  (void)store_.SetEvictable(ino, true);
  ++counters_.fetches;
  counters_.fetch_bytes += o.size;
  counters_.fetch_ns_total +=
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - started)
                                .count());
  return store_.GetAttr(ino);
}

}  // namespace kdn::edge
