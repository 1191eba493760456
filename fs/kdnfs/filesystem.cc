#include "fs/kdnfs/filesystem.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <new>
#include <sstream>
#include <thread>

#include "fs/kdnfs/kdn_xattrs.h"
#include "fs/kdnfs/log.h"
#include "fs/kdnfs/metrics.h"
#include "fs/kdnfs/mount_util.h"

namespace kdn::fs {
namespace {

constexpr size_t kNameMax = 255;
// Where a file stands with the origin: pending (its upload is queued), uploaded, local (empty),
// staged (being written). Only with an origin.
constexpr std::string_view kOriginXattr = "user.kdn.origin";

// What capacity and quotas count of a file of `size` bytes (the store's 4 KiB rounding).
constexpr uint64_t kSpaceUnit = 4096;
uint64_t SpaceOf(uint64_t size) {
  if (size > UINT64_MAX - kSpaceUnit) return UINT64_MAX;
  return (size + kSpaceUnit - 1) / kSpaceUnit * kSpaceUnit;
}
// Staged content reserves ahead of what it needs (up to as much again, at most this much), so
// that a file written sequentially in 128 KiB pieces is checked a few dozen times, not once per
// piece; what cannot be had ahead is not insisted on.
constexpr uint64_t kMostReservedAhead = uint64_t{16} << 20;
// How long a reservation that failed waits for the space of deleted files the kernel still held
// (ReserveFor).
constexpr auto kHeldReleaseWait = std::chrono::milliseconds(1000);

// Thread ids and processes as /proc and kill(2) see them.
class ProcFsProcesses : public Processes {
 public:
  int32_t ThreadGroupOf(int32_t tid) override {
    if (tid <= 0) return 0;
    // Most writers are single-threaded: a thread-group leader is its own group, and pidfd_open
    // (no PIDFD_THREAD) accepts leaders only. Two system calls instead of the kernel formatting
    // the whole of /proc/<tid>/status on every file's first write.
    if (int fd = static_cast<int>(::syscall(SYS_pidfd_open, tid, 0)); fd >= 0) {
      ::close(fd);
      return tid;
    }
    std::ifstream status("/proc/" + std::to_string(tid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("Tgid:")) return static_cast<int32_t>(std::atol(line.c_str() + 5));
    }
    return 0;
  }
  bool Alive(int32_t tid) override {
    if (tid <= 0) return false;
    return ::kill(tid, 0) == 0 || errno == EPERM;
  }
};

// The one errno -> Code mapping (status.h), so that an ENOENT made here IsNotFound() too.
Status Errno(int err, std::string_view what) {
  return Status::FromErrno(what, err);
}

Status ControlRefused() {
  return Errno(EPERM, "the control files under /.kdn are read-only");
}

Status CheckName(std::string_view name) {
  if (name.size() > kNameMax) return Errno(ENAMETOOLONG, "name longer than 255 bytes");
  return Status::OK();
}

bool IsDotOrDotDot(std::string_view name) {
  return name == "." || name == "..";
}

std::string Ratio(double r) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.3f", r);
  return buf;
}

}  // namespace

Filesystem::Filesystem(Options options) : options_(options) {}

Result<std::unique_ptr<Filesystem>> Filesystem::Open(const std::string& store_dir,
                                                     StoreOptions store_options, Options options) {
  if (options.origin) {
    // Names change behind this node's back (other nodes, through the origin): the kernel may
    // cache what it learned no longer than a listing is believed.
    const double ttl = std::chrono::duration<double>(options.origin_ttl).count();
    options.entry_timeout = std::min(options.entry_timeout, ttl);
    options.attr_timeout = std::min(options.attr_timeout, ttl);
    options.negative_timeout = std::min(options.negative_timeout, ttl);
  }
  std::unique_ptr<Filesystem> fs(new Filesystem(options));
  fs->requests_ = std::make_unique<RequestOutcomes>(store_options.info_log);
  Filesystem* self = fs.get();
  store_options.on_evict = [self](const std::vector<EvictedName>& names) {
    self->OnEvicted(names);
  };
  KDN_ASSIGN_OR_RETURN(fs->store_, Store::Open(store_dir, store_options));
  // After the store's Open, which read the slots a crashed daemon left.
  KDN_ASSIGN_OR_RETURN(fs->first_content_slots_,
                       FirstContentSlots::Create(fs->store_->FirstContentSlotsPath()));
  // The store's owner is whoever runs the daemon: root or that user sees store-wide stats.
  fs->control_ = std::make_unique<ControlFiles>(
      *fs->store_, [self] { return self->StatsText(); }, [self] { return self->MetricsText(); },
      static_cast<uint32_t>(::geteuid()));
  fs->own_processes_ = std::make_unique<ProcFsProcesses>();
  fs->processes_ = fs->own_processes_.get();
  if (options.origin) {
    edge::UploaderOptions upload = options.upload;
    if (!upload.log) upload.log = store_options.info_log;
    // Notes left by an earlier run are picked up at once: the uploader starts with the outbox.
    fs->uploader_ = std::make_unique<edge::Uploader>(*fs->store_, options.origin, upload);
    edge::ReaderOptions read;
    read.ttl = options.origin_ttl;
    read.read_timeout = options.origin_read_timeout;
    read.piece_bytes = options.origin_piece_bytes;
    read.fetch_threads = options.origin_fetch_threads;
    read.log = store_options.info_log;
    fs->reader_ = std::make_unique<edge::OriginReader>(
        *fs->store_, options.read_origin ? options.read_origin : options.origin, read,
        [self](Ino parent, const std::string& name, Ino ino) {
          self->ContentChanged(ino);
          if (KernelCache* cache = self->kernel_cache_.load()) cache->ForgetName(parent, name, ino);
        },
        [self](Ino ino) { self->HoldIfReferenced(ino); });
  }
  return fs;
}

Filesystem::~Filesystem() {
  if (store_) CommitAll();
  reader_.reset();  // its fetch threads commit into the store: stopped before it closes
  uploader_.reset();  // before the store closes; what it did not upload waits in the outbox
}

std::string Filesystem::MetadataNoteFor(Ino ino) {
  if (!uploader_ || HasStaged(ino)) return {};
  Result<InodeAttr> attr = store_->GetAttr(ino);
  // A directory's metadata travels in its marker (edge/ns_object.h).
  if (!attr.ok() || !(S_ISREG(attr->mode) || S_ISDIR(attr->mode))) return {};
  Result<std::string> path = store_->PathOf(ino);
  if (!path.ok() || !edge::Publishable(*path)) return {};
  return edge::MetadataNote(ino, *path);
}

std::string Filesystem::NotePath(Ino parent, std::string_view name) {
  if (!uploader_) return {};
  Result<std::string> dir = store_->PathOf(parent);
  if (!dir.ok()) return {};
  std::string path = *dir == "/" ? "" : *dir;
  path += '/';
  path += name;
  return edge::Publishable(path) ? path : std::string();
}

void Filesystem::SetProcesses(Processes* processes) {
  processes_ = processes ? processes : own_processes_.get();
}

void Filesystem::OnEvicted(const std::vector<EvictedName>& names) {
  KernelCache* cache = kernel_cache_.load();
  for (const auto& n : names) {
    ContentChanged(n.ino);
    KDN_LOG_INFO("evicted %s (inode %llu) to make room", n.name.c_str(),
                 static_cast<unsigned long long>(n.ino));
    if (cache) cache->ForgetName(n.parent, n.name, n.ino);
    // An uploaded file evicted here is still on the origin: the next lookup lists it again.
    if (reader_) reader_->MarkStale(n.parent);
  }
}

// ---- names ------------------------------------------------------------------------------------

void Filesystem::OverlayRemote(InodeAttr& attr) {
  if (reader_ && S_ISREG(attr.mode) && attr.chunk.IsZero() && !HasStaged(attr.ino)) {
    reader_->Overlay(attr);
  }
}

Status Filesystem::FetchBeforeStaging(Ino ino) {
  if (!reader_ || HasStaged(ino)) return Status::OK();
  Result<InodeAttr> fetched = reader_->Fetch(ino);
  if (!fetched.ok()) return fetched.status();
  ContentChanged(ino);
  return Status::OK();
}

Entry Filesystem::MakeEntry(const InodeAttr& attr) const {
  return Entry{attr, options_.entry_timeout, options_.attr_timeout};
}

void Filesystem::CountLookup(Ino ino) {
  MutexLock lock(mu_);
  ++inodes_[ino].nlookup;
}

Result<Entry> Filesystem::CountedEntry(Result<InodeAttr> attr,
                                       std::optional<uint64_t> epoch_before) {
  if (!attr.ok()) return attr.status();
  if (epoch_before) {
    Freshen(*attr, *epoch_before);
  } else {
    OverlayStaged(*attr);
  }
  OverlayRemote(*attr);
  CountLookup(attr->ino);
  return MakeEntry(*attr);
}

void Filesystem::HoldIfReferenced(Ino ino) {
  MutexLock lock(mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end() || it->second.nlookup == 0 || it->second.held) return;
  // Under mu_, so that a concurrent Forget cannot give the handle back before it is taken.
  if (store_->OpenInode(ino).ok()) {
    it->second.held = true;
    ++held_inodes_;
  }
}

Status Filesystem::CheckWritableDir(Ino parent, std::string_view name) {
  if (ControlFiles::IsControl(parent)) return ControlRefused();
  if (parent == kRootIno && name == kControlDirName) {
    return Errno(EPERM, "/.kdn is reserved for kdnfs's control files");
  }
  if (name == kSetPrefixDirName) {
    return Errno(EPERM, ".kdn-prefix is reserved for kdnfs's prefix lookups");
  }
  return CheckName(name);
}

Result<Entry> Filesystem::Lookup(const Caller& caller, Ino parent, std::string_view name) {
  if (ControlFiles::IsControl(parent) || (parent == kRootIno && name == kControlDirName)) {
    return control_->Lookup(caller, parent, name);
  }
  if (name == kSetPrefixDirName) return control_->LookupSetPrefixDir(parent);
  KDN_RETURN_IF_ERROR(CheckName(name));
  if (reader_) reader_->Refresh(parent);
  const uint64_t epoch = content_epoch_.load();
  auto attr = store_->Lookup(parent, name);
  if (!attr.ok() && attr.status().IsNotFound() && options_.negative_timeout > 0) {
    Entry negative;
    negative.entry_timeout = options_.negative_timeout;
    return negative;
  }
  return CountedEntry(std::move(attr), epoch);
}

void Filesystem::Forget(Ino ino, uint64_t count) {
  if (ControlFiles::IsControl(ino)) {
    control_->Forget(ino, count);
    return;
  }
  bool release = false;
  std::shared_ptr<StagedFile> staged;
  {
    MutexLock lock(mu_);
    auto it = inodes_.find(ino);
    if (it == inodes_.end()) return;
    InodeState& st = it->second;
    st.nlookup -= std::min(count, st.nlookup);
    if (st.nlookup > 0) return;
    release = st.held;
    st.held = false;
    staged = st.staged;
    if (!staged) inodes_.erase(it);
  }
  if (staged) {
    // Nobody can have the file open any more: whatever was written is final.
    std::unique_lock lock(staged->mutex());
    if (!staged->retired()) {
      (void)Commit(ino, StagedLock{staged, std::move(lock)}, "last reference dropped");
    }
  }
  if (release) {
    (void)store_->CloseInode(ino);
    MutexLock lock(mu_);
    --held_inodes_;
    ++held_releases_;
    held_released_.notify_all();
  }
}

bool Filesystem::OverlayStaged(InodeAttr& attr) {
  if (!S_ISREG(attr.mode)) return false;
  std::shared_ptr<StagedFile> staged = StagedOf(attr.ino);
  if (!staged) return false;
  std::shared_lock lock(staged->mutex());
  if (staged->retired()) return false;
  attr.size = staged->size();
  attr.mtime_ns = staged->mtime_ns();
  attr.ctime_ns = std::max(attr.ctime_ns, staged->ctime_ns());
  return true;
}

void Filesystem::Freshen(InodeAttr& attr, uint64_t epoch_before) {
  if (!S_ISREG(attr.mode)) return;
  // Staged content is newer than anything committed. Without any, `attr` is current unless a
  // commit ended since epoch_before (the epoch moves with the staged file's removal, under mu_).
  // A retired staged file that is still there is a commit that has not ended: wait for it.
  // Commits elsewhere also move the epoch; then the store is asked again (a few reads at most).
  for (int attempt = 0; attempt < 1000; ++attempt) {
    if (OverlayStaged(attr)) return;
    if (StagedOf(attr.ino) == nullptr && content_epoch_.load() == epoch_before) return;
    std::this_thread::yield();
    epoch_before = content_epoch_.load();
    auto again = store_->GetAttr(attr.ino);
    if (!again.ok()) return;  // gone meanwhile: what was read is all there is
    attr = *again;
  }
  KDN_LOG_ERROR("inode %llu: attributes kept changing; answering with the last ones read",
                static_cast<unsigned long long>(attr.ino));
}

Result<Attr> Filesystem::GetAttr(Ino ino) {
  if (ControlFiles::IsControl(ino)) {
    KDN_ASSIGN_OR_RETURN(InodeAttr attr, control_->GetAttr(ino));
    return Attr{attr, 0.0};
  }
  const uint64_t epoch = content_epoch_.load();
  KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_->GetAttr(ino));
  Freshen(attr, epoch);
  OverlayRemote(attr);
  return Attr{attr, options_.attr_timeout};
}

Result<Attr> Filesystem::SetAttr(const Caller& caller, Ino ino, const SetAttrRequest& request) {
  AttrChange change(changes_);
  if (ControlFiles::IsControl(ino)) return ControlRefused();
  SetAttrRequest rest = request;
  rest.size.reset();
  if (request.size) {
    // Committed content is immutable: the truncated (or extended) content is staged and
    // committed like a write, at the truncating process's close.
    KDN_ASSIGN_OR_RETURN(InodeAttr current, store_->GetAttr(ino));
    if (S_ISDIR(current.mode)) return Errno(EISDIR, "truncate of a directory");
    if (!S_ISREG(current.mode)) return Errno(EINVAL, "truncate of a special file");
    std::shared_ptr<StagedFile> already = StagedOf(ino);
    if (already || *request.size != current.size) {
      if (*request.size > 0) KDN_RETURN_IF_ERROR(FetchBeforeStaging(ino));
      KDN_ASSIGN_OR_RETURN(StagedLock staged, Stage(ino, *request.size));
      // A size the store cannot hold is refused here, at once: nothing is read or hashed.
      KDN_RETURN_IF_ERROR(ReserveFor(*staged.file, *request.size));
      KDN_RETURN_IF_ERROR(staged.file->Truncate(*request.size));
      NoteWriter(*staged.file, caller);
    }
  }
  bool other = rest.mode || rest.uid || rest.gid || rest.atime_ns || rest.mtime_ns || rest.ctime_ns;
  if (other) {
    const bool published = rest.mode || rest.uid || rest.gid || rest.mtime_ns;
    const std::string note = published ? MetadataNoteFor(ino) : std::string();
    KDN_ASSIGN_OR_RETURN(InodeAttr changed, store_->SetAttr(ino, rest, note));
    if (!note.empty()) uploader_->Kick();
    if (rest.mtime_ns) {
      if (auto staged = StagedOf(ino)) {
        std::unique_lock lock(staged->mutex());
        if (!staged->retired()) staged->set_mtime_ns(changed.mtime_ns);
      }
    }
  }
  return GetAttr(ino);
}

Result<NewNode> Filesystem::NewNodeFor(const Caller& caller, Ino parent, uint32_t mode) {
  // What a new node takes from its directory (its setgid bit and group) changes only by SetAttr:
  // the last directory's is remembered until one runs, so that creates in one directory ask the
  // store once. Not with an origin (refreshes change inodes behind this daemon's back).
  InodeAttr dir;
  bool known = false;
  const uint64_t changes = changes_.load();
  if (!HasOrigin()) {
    MutexLock lock(last_dir_mu_);
    if (last_dir_ && last_dir_->attr.ino == parent && last_dir_->changes == changes) {
      dir = last_dir_->attr;
      known = true;
    }
  }
  if (!known) {
    KDN_ASSIGN_OR_RETURN(dir, store_->GetAttr(parent));
    if (!HasOrigin() && S_ISDIR(dir.mode)) {
      MutexLock lock(last_dir_mu_);
      last_dir_ = KnownDir{dir, changes};
    }
  }
  if (!S_ISDIR(dir.mode)) return Errno(ENOTDIR, "parent is not a directory");
  NewNode node;
  node.mode = mode;
  node.uid = caller.uid;
  node.gid = caller.gid;
  if (dir.mode & S_ISGID) {
    // As on ext4: the directory's group, and subdirectories carry the bit on.
    node.gid = dir.gid;
    if (S_ISDIR(mode)) {
      node.mode |= S_ISGID;
    } else if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) && caller.uid != 0 &&
               !caller.InGroup(dir.gid)) {
      node.mode &= ~S_ISGID;
    }
  }
  return node;
}

Result<Entry> Filesystem::MakeNode(const Caller& caller, Ino parent, std::string_view name,
                                   uint32_t mode, uint64_t rdev) {
  KDN_RETURN_IF_ERROR(CheckWritableDir(parent, name));
  if (S_ISDIR(mode) || S_ISLNK(mode)) return Errno(EINVAL, "mknod of a directory or symlink");
  if ((mode & S_IFMT) == 0) mode |= S_IFREG;
  KDN_ASSIGN_OR_RETURN(NewNode node, NewNodeFor(caller, parent, mode));
  node.rdev = rdev;
  return CountedEntry(store_->MakeNode(parent, name, node));
}

Result<Entry> Filesystem::MakeDir(const Caller& caller, Ino parent, std::string_view name,
                                  uint32_t mode) {
  KDN_RETURN_IF_ERROR(CheckWritableDir(parent, name));
  KDN_ASSIGN_OR_RETURN(NewNode node, NewNodeFor(caller, parent, S_IFDIR | (mode & 07777)));
  // The directory's marker on the origin, so that it exists there while empty.
  const std::string path = NotePath(parent, name);
  Result<InodeAttr> made =
      store_->MakeNode(parent, name, node, path.empty() ? std::string() : edge::MakeDirNote(path));
  if (made.ok() && !path.empty()) uploader_->Kick();
  return CountedEntry(std::move(made));
}

Result<Entry> Filesystem::MakeSymlink(const Caller& caller, Ino parent, std::string_view name,
                                      std::string_view target) {
  KDN_RETURN_IF_ERROR(CheckWritableDir(parent, name));
  if (target.empty() || target.size() > 4095) {
    return Errno(target.empty() ? ENOENT : ENAMETOOLONG, "symlink target length");
  }
  KDN_ASSIGN_OR_RETURN(NewNode node, NewNodeFor(caller, parent, S_IFLNK | 0777));
  node.symlink_target = std::string(target);
  return CountedEntry(store_->MakeNode(parent, name, node));
}

Result<Entry> Filesystem::Create(const Caller& caller, Ino parent, std::string_view name,
                                 uint32_t mode, int open_flags) {
  KDN_RETURN_IF_ERROR(CheckWritableDir(parent, name));
  KDN_ASSIGN_OR_RETURN(NewNode node, NewNodeFor(caller, parent, S_IFREG | (mode & 07777)));
  const uint64_t changes = changes_.load();
  auto made = store_->MakeNode(parent, name, node);
  if (made.ok()) {
    const InodeAttr attr = *made;
    auto entry = CountedEntry(std::move(made));
    // With an origin, fetches and refreshes change inodes behind this daemon's back.
    if (entry.ok() && !HasOrigin()) {
      MutexLock lock(mu_);
      if (auto it = inodes_.find(attr.ino); it != inodes_.end()) {
        it->second.created = InodeState::Created{attr, parent, changes};
      }
    }
    return entry;
  }
  if (made.status().code() != Code::kAlreadyExists || (open_flags & O_EXCL)) {
    return CountedEntry(std::move(made));
  }
  // Created by someone else since the kernel looked: O_CREAT without O_EXCL opens it.
  KDN_ASSIGN_OR_RETURN(InodeAttr existing, store_->Lookup(parent, name));
  if (S_ISDIR(existing.mode)) return Errno(EISDIR, "is a directory");
  if (open_flags & O_TRUNC) {
    SetAttrRequest truncate;
    truncate.size = 0;
    KDN_RETURN_IF_ERROR(SetAttr(caller, existing.ino, truncate).status());
  }
  const uint64_t epoch = content_epoch_.load();
  return CountedEntry(store_->GetAttr(existing.ino), epoch);
}

Result<Entry> Filesystem::Link(const Caller& caller, Ino ino, Ino new_parent,
                               std::string_view new_name) {
  AttrChange change(changes_);
  (void)caller;
  if (ControlFiles::IsControl(ino)) return ControlRefused();
  KDN_RETURN_IF_ERROR(CheckWritableDir(new_parent, new_name));
  KDN_RETURN_IF_ERROR(CheckNewName(ino, new_parent));
  const uint64_t epoch = content_epoch_.load();
  // The new name is published as its own namespace object (the note publishes every name).
  const std::string note =
      NotePath(new_parent, new_name).empty() ? std::string() : MetadataNoteFor(ino);
  Result<InodeAttr> linked = store_->Link(ino, new_parent, new_name, note);
  if (linked.ok() && !note.empty()) uploader_->Kick();
  return CountedEntry(std::move(linked), epoch);
}

Result<std::string> Filesystem::ReadLink(Ino ino) {
  if (ControlFiles::IsControl(ino)) return control_->ReadLink(ino);
  return store_->ReadLink(ino);
}

Status Filesystem::Unlink(const Caller& caller, Ino parent, std::string_view name) {
  AttrChange change(changes_);
  (void)caller;
  KDN_RETURN_IF_ERROR(CheckWritableDir(parent, name));
  KDN_ASSIGN_OR_RETURN(InodeAttr target, store_->Lookup(parent, name));
  if (S_ISDIR(target.mode)) return Errno(EISDIR, "unlink of a directory");
  HoldIfReferenced(target.ino);
  const std::string path = NotePath(parent, name);
  KDN_RETURN_IF_ERROR(
      store_->Unlink(parent, name, path.empty() ? std::string() : edge::DeleteNote(path)).status());
  if (!path.empty()) uploader_->Kick();
  return Status::OK();
}

Status Filesystem::Rmdir(const Caller& caller, Ino parent, std::string_view name) {
  (void)caller;
  KDN_RETURN_IF_ERROR(CheckWritableDir(parent, name));
  const std::string path = NotePath(parent, name);
  KDN_RETURN_IF_ERROR(
      store_->Rmdir(parent, name, path.empty() ? std::string() : edge::RemoveDirNote(path)));
  if (!path.empty()) uploader_->Kick();
  return Status::OK();
}

Status Filesystem::Rename(const Caller& caller, Ino parent, std::string_view name, Ino new_parent,
                          std::string_view new_name, uint32_t flags) {
  AttrChange change(changes_);
  (void)caller;
  KDN_RETURN_IF_ERROR(CheckWritableDir(parent, name));
  KDN_RETURN_IF_ERROR(CheckWritableDir(new_parent, new_name));
  if (flags & ~(kRenameNoReplace | kRenameExchange)) {
    return Errno(EINVAL, "unsupported rename flags");
  }
  if (parent != new_parent) {
    KDN_ASSIGN_OR_RETURN(InodeAttr moved, store_->Lookup(parent, name));
    KDN_RETURN_IF_ERROR(CheckNewName(moved.ino, new_parent));
    if (flags & kRenameExchange) {
      KDN_ASSIGN_OR_RETURN(InodeAttr other, store_->Lookup(new_parent, new_name));
      KDN_RETURN_IF_ERROR(CheckNewName(other.ino, parent));
    }
  }
  if (!(flags & kRenameExchange)) {
    auto target = store_->Lookup(new_parent, new_name);
    if (target.ok() && !S_ISDIR(target->mode)) HoldIfReferenced(target->ino);
  }
  const std::string from = NotePath(parent, name), to = NotePath(new_parent, new_name);
  std::string note;
  if (!from.empty() && !to.empty()) {
    note = (flags & kRenameExchange) ? edge::ExchangeNote(from, to) : edge::RenameNote(from, to);
  } else if (!from.empty()) {
    note = edge::DeleteNote(from);  // moved to a name the origin does not keep
  }
  KDN_RETURN_IF_ERROR(store_->Rename(parent, name, new_parent, new_name, flags, note));
  if (!note.empty()) uploader_->Kick();
  return Status::OK();
}

Status Filesystem::ReadDir(Ino dir, uint64_t cookie, bool plus, size_t max_entries,
                           const DirFiller& fill) {
  if (ControlFiles::IsControl(dir)) {
    KDN_ASSIGN_OR_RETURN(auto entries, control_->ReadDir(dir, cookie));
    for (const auto& e : entries) {
      // Not cached: the kernel asks again at each use (the stats file changes all the time).
      if (!fill(e.name, Entry{e.attr, 0.0, 0.0}, e.cookie)) break;
    }
    return Status::OK();
  }
  if (reader_ && cookie == 0) reader_->Refresh(dir);
  const uint64_t epoch = content_epoch_.load();
  KDN_ASSIGN_OR_RETURN(auto entries,
                       store_->ReadDir(dir, cookie, std::max<size_t>(max_entries, 1)));
  for (auto& e : entries) {
    bool counted = plus && !IsDotOrDotDot(e.name);
    if (counted) Freshen(e.attr, epoch);
    if (counted) OverlayRemote(e.attr);
    // Counted before the reply exists: the kernel may forget the entry as soon as it has it.
    if (counted) CountLookup(e.attr.ino);
    if (!fill(e.name, MakeEntry(e.attr), e.cookie)) {
      if (counted) Forget(e.attr.ino, 1);
      break;
    }
  }
  return Status::OK();
}

// ---- content ----------------------------------------------------------------------------------

std::shared_ptr<StagedFile> Filesystem::StagedOf(Ino ino) {
  MutexLock lock(mu_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second.staged;
}

Result<Filesystem::StagedLock> Filesystem::Stage(Ino ino, uint64_t keep) {
  for (;;) {
    std::shared_ptr<StagedFile> file;
    std::unique_lock<std::shared_mutex> file_lock;
    std::optional<InodeState::Created> created;
    {
      MutexLock lock(mu_);
      InodeState& st = inodes_[ino];
      file = st.staged;
      if (!file) {
        if (st.created && st.created->changes == changes_.load()) created = std::move(st.created);
        st.created.reset();
        // Published locked: a second writer of the inode waits until the copy below is done.
        file = StagedFile::CreateInMemory(store_->NewStagingPath(), &staging_memory_,
                                          first_content_slots_.get());
        file_lock = std::unique_lock(file->mutex());
        st.staged = file;
        if (!store_->OpenInode(ino).ok()) {
          // Gone (unlinked and reclaimed): nothing to write to.
          file->Retire();
          st.staged.reset();
          if (st.nlookup == 0 && !st.held) inodes_.erase(ino);
          return Status::NotFound("inode " + std::to_string(ino) + " no longer exists");
        }
      }
    }
    if (!file_lock.owns_lock()) {
      file_lock = std::unique_lock(file->mutex());
      if (file->retired()) continue;  // committed meanwhile: stage again from the new content
      return StagedLock{std::move(file), std::move(file_lock)};
    }
    // A new staged file: copy as much of the committed content as the caller keeps.
    Status copied;
    auto attr = created ? Result<InodeAttr>(created->attr) : store_->GetAttr(ino);
    if (!attr.ok()) {
      copied = attr.status();
    } else if (!S_ISREG(attr->mode)) {
      copied = Errno(S_ISDIR(attr->mode) ? EISDIR : EINVAL, "not a regular file");
    } else if (attr->chunk.IsZero() && attr->size == 0) {
      // A new file (cp, >): should its first content never commit, it must not stay behind
      // empty, neither after a crash nor after a refusal.
      copied = file->MarkFirstContent(ino, store_->NewStagingPath(ino));
      if (copied.ok()) file->set_mtime_ns(attr->mtime_ns);
    } else {
      copied = file->CopyFrom(*store_, attr->chunk, std::min(keep, attr->size));
      if (copied.ok()) file->set_mtime_ns(attr->mtime_ns);
    }
    if (copied.ok()) {
      auto basis = QuotaBasisOf(*attr, created ? created->parent : 0);
      if (basis.ok()) {
        file->set_quota_basis(std::move(*basis));
      } else {
        copied = basis.status();
      }
    }
    if (!copied.ok()) {
      file->Retire();
      file_lock.unlock();
      Unstage(ino, file);
      return copied;
    }
    return StagedLock{std::move(file), std::move(file_lock)};
  }
}

void Filesystem::Unstage(Ino ino, const std::shared_ptr<StagedFile>& file) {
  {
    MutexLock lock(mu_);
    content_epoch_.fetch_add(1);  // the content committed (or not): see Freshen
    auto it = inodes_.find(ino);
    if (it != inodes_.end() && it->second.staged == file) {
      it->second.staged.reset();
      it->second.content_known = false;
      ++it->second.generation;
      if (it->second.nlookup == 0 && !it->second.held) inodes_.erase(it);
    }
  }
  (void)store_->CloseInode(ino);
}

void Filesystem::ContentChanged(Ino ino) {
  MutexLock lock(mu_);
  content_epoch_.fetch_add(1);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  it->second.created.reset();
  it->second.content_known = false;
  ++it->second.generation;
}

void Filesystem::NoteWriter(StagedFile& file, const Caller& caller) {
  if (caller.pid <= 0 || file.HasWriterThread(caller.pid)) return;
  int32_t tgid = processes_->ThreadGroupOf(caller.pid);
  file.AddWriter(caller.pid, tgid > 0 ? tgid : caller.pid);
}

// ---- space and quotas -------------------------------------------------------------------------

Status Filesystem::ReserveFor(StagedFile& file, uint64_t end) {
  const uint64_t need = SpaceOf(end);
  const uint64_t have = file.reserved();
  if (need <= have) return Status::OK();
  const uint64_t ahead = std::max(need, have + std::min(have, kMostReservedAhead));
  if (ahead > need && Grow(file, ahead - have, false).ok()) return Status::OK();
  if (Grow(file, need - have, false).ok()) return Status::OK();
  // Evicting may remove files and wait for the disk: the FUSE loop hands receiving off first.
  if (blocking_hook_ != nullptr) blocking_hook_();
  Status grown = Grow(file, need - have, true);
  // The space of a file deleted while the kernel held it returns at the kernel's FORGET, which
  // the kernel sends after the last close, and which may reach kdnfs after the user's next
  // write: `rm big; cp small .` must not fail for want of space that is already free. Like
  // ext4, which retries an allocation after a journal commit, a reservation that fails waits
  // for such releases (briefly: a held file may also be open for good) and tries again.
  const auto deadline = std::chrono::steady_clock::now() + kHeldReleaseWait;
  while (grown.sys_errno() == ENOSPC && WaitForHeldRelease(deadline)) {
    grown = Grow(file, need - have, true);
  }
  return grown;
}

bool Filesystem::WaitForHeldRelease(std::chrono::steady_clock::time_point deadline) {
  UniqueLock lock(mu_);
  if (held_inodes_ == 0) return false;
  const uint64_t seen = held_releases_;
  return held_released_.wait_until(lock, deadline, [&]() KDN_REQUIRES(mu_) {
    return held_releases_ != seen;
  });
}

Status Filesystem::Grow(StagedFile& file, uint64_t bytes, bool evict) {
  if (const StagedFile::QuotaBasis* basis = file.quota_basis()) {
    KDN_RETURN_IF_ERROR(CheckQuotas(*basis, bytes));
  }
  Status reserved = store_->ReserveSpace(bytes, evict);
  if (!reserved.ok()) return reserved.IsNoSpace() ? Errno(ENOSPC, reserved.message()) : reserved;
  file.AddReserved(*store_, bytes);
  return Status::OK();
}

int64_t Filesystem::StagedBeyondCommitted(
    const std::function<bool(const StagedFile::QuotaBasis&)>& counts) {
  std::vector<std::shared_ptr<StagedFile>> staged;
  {
    MutexLock lock(mu_);
    for (const auto& [ino, st] : inodes_) {
      if (st.staged) staged.push_back(st.staged);
    }
  }
  int64_t net = 0;
  for (const auto& f : staged) {
    const StagedFile::QuotaBasis* basis = f->quota_basis();
    if (basis == nullptr || !counts(*basis)) continue;
    net += static_cast<int64_t>(f->reserved()) - static_cast<int64_t>(basis->committed_bytes);
  }
  return net;
}

namespace {

// Whether `used` (committed bytes plus the net staged beyond them) and `more` fit in `quota`.
bool Fits(uint64_t committed, int64_t staged, uint64_t more, uint64_t quota) {
  const int64_t used_signed = static_cast<int64_t>(committed) + staged;
  const uint64_t used = used_signed < 0 ? 0 : static_cast<uint64_t>(used_signed);
  return more <= quota && used <= quota - more;
}

}  // namespace

Status Filesystem::CheckSetQuota(Ino dir, uint64_t quota, uint64_t bytes) {
  KDN_ASSIGN_OR_RETURN(uint64_t committed, store_->FileBytesInDir(dir));
  const int64_t staged = StagedBeyondCommitted([dir](const StagedFile::QuotaBasis& b) {
    return std::find(b.quota_dirs.begin(), b.quota_dirs.end(), dir) != b.quota_dirs.end();
  });
  if (Fits(committed, staged, bytes, quota)) return Status::OK();
  return Errno(EDQUOT, "the set (directory inode " + std::to_string(dir) + ") holds " +
                           std::to_string(committed) + " bytes, its quota is " +
                           std::to_string(quota));
}

Status Filesystem::CheckQuotas(const StagedFile::QuotaBasis& basis, uint64_t bytes) {
  const uint64_t user_quota = options_.user_quota_bytes;
  if (user_quota != 0 && basis.owner != 0) {
    KDN_ASSIGN_OR_RETURN(uint64_t committed, store_->FileBytesOfOwner(basis.owner));
    const uint32_t owner = basis.owner;
    const int64_t staged = StagedBeyondCommitted(
        [owner](const StagedFile::QuotaBasis& b) { return b.owner == owner; });
    if (!Fits(committed, staged, bytes, user_quota)) {
      return Errno(EDQUOT, "user " + std::to_string(owner) + "'s files hold " +
                               std::to_string(committed) + " bytes, the quota is " +
                               std::to_string(user_quota));
    }
  }
  for (Ino dir : basis.quota_dirs) {
    KDN_ASSIGN_OR_RETURN(uint64_t quota, SetQuotaOf(dir));
    if (quota != 0) KDN_RETURN_IF_ERROR(CheckSetQuota(dir, quota, bytes));
  }
  return Status::OK();
}

Result<uint64_t> Filesystem::SetQuotaOf(Ino dir) {
  {
    MutexLock lock(quota_mu_);
    if (auto it = set_quotas_.find(dir); it != set_quotas_.end()) return it->second;
  }
  uint64_t quota = 0;
  auto value = store_->GetXattr(dir, kQuotaXattr);
  if (value.ok()) {
    auto parsed = ParseSize(*value);  // stored in bytes by SetQuota
    if (parsed.ok()) quota = *parsed;
  } else if (!value.status().IsNotFound()) {
    return value.status();
  }
  MutexLock lock(quota_mu_);
  // A SetQuota that ran meanwhile has put the newer value there: it stays.
  return set_quotas_.emplace(dir, quota).first->second;
}

Result<StagedFile::QuotaBasis> Filesystem::QuotaBasisOf(const InodeAttr& attr, Ino parent) {
  StagedFile::QuotaBasis basis;
  basis.owner = attr.uid;
  basis.committed_bytes = SpaceOf(attr.size);
  std::vector<Ino> parents;
  if (parent != 0) {
    parents.push_back(parent);
  } else {
    KDN_ASSIGN_OR_RETURN(parents, store_->ParentsOf(attr.ino));
  }
  for (Ino dir : parents) {
    KDN_ASSIGN_OR_RETURN(uint64_t quota, SetQuotaOf(dir));
    if (quota != 0) basis.quota_dirs.push_back(dir);
  }
  return basis;
}

Status Filesystem::CheckNewName(Ino ino, Ino dir) {
  KDN_ASSIGN_OR_RETURN(uint64_t quota, SetQuotaOf(dir));
  if (quota == 0) return Status::OK();
  KDN_ASSIGN_OR_RETURN(Attr attr, GetAttr(ino));  // with what is staged
  if (!S_ISREG(attr.attr.mode)) return Status::OK();
  return CheckSetQuota(dir, quota, SpaceOf(attr.attr.size));
}

Status Filesystem::SetQuota(const Caller& caller, Ino ino, const std::string* value,
                            XattrSetMode mode) {
  KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_->GetAttr(ino));
  if (!S_ISDIR(attr.mode)) {
    return Errno(EPERM, std::string(kQuotaXattr) + " applies to directories (knowledge sets)");
  }
  if (caller.uid != 0 && caller.uid != attr.uid) {
    return Errno(EPERM, "only the owner of a set or root may change its quota");
  }
  uint64_t quota = 0;
  Status st;
  if (value == nullptr) {
    st = store_->RemoveXattr(ino, kQuotaXattr);
  } else {
    auto parsed = ParseSize(*value);
    if (!parsed.ok()) return Errno(EINVAL, parsed.status().message());
    quota = *parsed;
    st = store_->SetXattr(ino, kQuotaXattr, std::to_string(quota), mode);
  }
  if (st.IsNotFound()) return Errno(ENODATA, st.message());
  KDN_RETURN_IF_ERROR(st);
  MutexLock lock(quota_mu_);
  set_quotas_[ino] = quota;
  return Status::OK();
}

bool Filesystem::IsWriter(const StagedFile& file, const Caller& caller) {
  // A caller the kernel could not name (another pid namespace) may be the writer: commit.
  if (caller.pid <= 0 || file.writers().empty()) return true;
  if (file.HasWriterThread(caller.pid)) return true;
  int32_t tgid = processes_->ThreadGroupOf(caller.pid);
  return tgid > 0 && file.HasWriterProcess(tgid);
}

std::optional<CommittedContent> Filesystem::CommittedForRead(Ino ino) {
  if (ControlFiles::IsControl(ino)) return std::nullopt;
  // The content READ last found (or the last open), unless a change came since: an open of a
  // file read before costs no database query, like its READs. Not with an origin: fetches and
  // namespace refreshes change an inode's content in the store behind this cache.
  const bool cacheable = !HasOrigin();
  uint64_t generation = 0;
  {
    MutexLock lock(mu_);
    auto it = inodes_.find(ino);
    if (it != inodes_.end()) {
      if (it->second.staged) return std::nullopt;
      if (cacheable && it->second.content_known) {
        if (it->second.chunk.IsZero() || it->second.size == 0) return std::nullopt;
        return CommittedContent{it->second.chunk, it->second.size};
      }
      generation = it->second.generation;
    }
  }
  Result<InodeAttr> attr = store_->GetAttr(ino);
  if (!attr.ok() || (attr->mode & S_IFMT) != S_IFREG) return std::nullopt;
  if (attr->size == 0) {
    // A placeholder: its reads are likely to follow, so its fetch starts now. Not passed through
    // while it arrives (kdnfs serves each range as it lands); later opens of the committed
    // content are.
    if (reader_ && attr->chunk.IsZero()) reader_->Prefetch(ino);
    return std::nullopt;
  }
  MutexLock lock(mu_);
  auto it = inodes_.find(ino);
  // Staged since the look above: the open is served by kdnfs (a writer is at work).
  if (it != inodes_.end() && it->second.staged) return std::nullopt;
  if (cacheable && it != inodes_.end() && it->second.generation == generation) {
    it->second.content_known = true;
    it->second.chunk = attr->chunk;
    it->second.size = attr->size;
  }
  if (attr->chunk.IsZero()) return std::nullopt;
  return CommittedContent{attr->chunk, attr->size};
}

Result<size_t> Filesystem::Read(Ino ino, uint64_t offset, std::span<std::byte> out,
                                ReadView view) {
  if (ControlFiles::IsControl(ino)) return control_->Read(ino, offset, out);
  std::shared_ptr<StagedFile> staged;
  bool known = false;
  ChunkId chunk;
  uint64_t size = 0;
  uint64_t generation = 0;
  {
    MutexLock lock(mu_);
    if (auto it = inodes_.find(ino); it != inodes_.end()) {
      if (view == ReadView::kLatest) staged = it->second.staged;
      known = it->second.content_known;
      chunk = it->second.chunk;
      size = it->second.size;
      generation = it->second.generation;
    }
  }
  if (staged) {
    std::shared_lock lock(staged->mutex());
    if (!staged->retired()) {
      KDN_ASSIGN_OR_RETURN(size_t n, staged->Read(offset, out));
      counters_.reads.fetch_add(1, std::memory_order_relaxed);
      counters_.read_bytes.fetch_add(n, std::memory_order_relaxed);
      return n;
    }
    known = false;
  }
  // A commit may replace the chunk between the lookup of the content and its read: then the
  // chunk is gone (NotFound) and the content is looked up again.
  for (int attempt = 0;; ++attempt) {
    if (!known || attempt > 0) {
      KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_->GetAttr(ino));
      if (S_ISDIR(attr.mode)) return Errno(EISDIR, "read of a directory");
      if (!S_ISREG(attr.mode)) return Errno(EINVAL, "read of a special file");
      chunk = attr.chunk;
      size = attr.size;
      MutexLock lock(mu_);
      if (auto it = inodes_.find(ino);
          it != inodes_.end() && !it->second.staged && it->second.generation == generation) {
        it->second.content_known = true;
        it->second.chunk = chunk;
        it->second.size = size;
      }
    }
    if (chunk.IsZero() && reader_) {
      // A placeholder of an origin object: a read miss, served from its fetch as the asked
      // bytes land and pass their checks, until the content is committed (origin_reader.h).
      KDN_ASSIGN_OR_RETURN(edge::MissRead miss, reader_->Read(ino, offset, out));
      if (!miss.committed) {
        counters_.reads.fetch_add(1, std::memory_order_relaxed);
        counters_.read_bytes.fetch_add(miss.bytes, std::memory_order_relaxed);
        return miss.bytes;
      }
      if (!miss.committed->chunk.IsZero()) {
        ContentChanged(ino);
        chunk = miss.committed->chunk;
        size = miss.committed->size;
      }
    }
    if (chunk.IsZero() || offset >= size) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset));
    auto got = store_->Get(chunk, offset, out.first(want));
    if (!got.ok() && got.status().IsNotFound() && attempt == 0) continue;
    if (!got.ok()) {
      KDN_LOG_ERROR("read of inode %llu at %llu failed: %s", static_cast<unsigned long long>(ino),
                    static_cast<unsigned long long>(offset), got.status().ToString().c_str());
      return got.status().IsNotFound() ? Errno(EIO, got.status().message()) : got.status();
    }
    counters_.reads.fetch_add(1, std::memory_order_relaxed);
    counters_.read_bytes.fetch_add(*got, std::memory_order_relaxed);
    return *got;
  }
}

bool Filesystem::FirstWriteStaysInMemory(Ino ino, uint64_t end) {
  if (HasOrigin() || end > StagedFile::kMostInMemory) return false;
  MutexLock lock(mu_);
  auto it = inodes_.find(ino);
  return it != inodes_.end() && !it->second.staged && it->second.created &&
         it->second.created->changes == changes_.load();
}

Result<size_t> Filesystem::Write(const Caller& caller, Ino ino, uint64_t offset,
                                 std::span<const std::byte> data) {
  if (ControlFiles::IsControl(ino)) return ControlRefused();
  KDN_RETURN_IF_ERROR(FetchBeforeStaging(ino));
  KDN_ASSIGN_OR_RETURN(StagedLock staged, Stage(ino));
  if (offset > UINT64_MAX - data.size()) return Errno(EFBIG, "write beyond the largest offset");
  KDN_RETURN_IF_ERROR(
      ReserveFor(*staged.file, std::max<uint64_t>(staged.file->size(), offset + data.size())));
  KDN_RETURN_IF_ERROR(staged.file->Write(offset, data));
  NoteWriter(*staged.file, caller);
  counters_.writes.fetch_add(1, std::memory_order_relaxed);
  counters_.write_bytes.fetch_add(data.size(), std::memory_order_relaxed);
  return data.size();
}

Status Filesystem::Commit(Ino ino, StagedLock staged, const char* why) {
  std::shared_ptr<StagedFile> file = staged.file;
  uint64_t bytes = file->size();
  CommitOptions options;
  options.mtime_ns = file->mtime_ns();
  if (uploader_) {
    // The upload of this content is recorded in the commit's own transaction (store.h, outbox).
    Result<std::string> path = store_->PathOf(ino);
    if (path.ok() && edge::Publishable(*path)) options.outbox_note = edge::PutNote(ino, *path);
  }
  auto committed = [&]() -> Result<InodeAttr> {
    // Content larger than the store can ever hold is refused before its bytes are read (hashed,
    // verified): a sparse file that claims 64 GiB costs nothing but this check.
    // (Content held in memory is small: no statfs(2) for it.)
    const uint64_t capacity = file->in_memory() ? 0 : store_->Usage().capacity_bytes;
    if (capacity != 0 && bytes > capacity) {
      return Status::NoSpace(std::to_string(bytes) + " bytes of content, the store holds " +
                             std::to_string(capacity));
    }
    // The capacity reserved as the file was written pays for its chunk: the commit takes it
    // over, whatever its outcome (until then the staged file still counts it for quotas).
    options.reserved_bytes = file->reserved();
    // No request may take the daemon down: memory that cannot be had fails this commit only.
    try {
      auto done = file->in_memory()
                      ? store_->CommitFileContent(ino, file->content(), options)
                      : store_->CommitFileContent(ino, file->path(), options);
      file->TakeReserved();
      return done;
    } catch (const std::bad_alloc&) {
      file->TakeReserved();
      return Errno(ENOMEM, "out of memory while committing " + std::to_string(bytes) + " bytes");
    }
  }();
  std::string name;  // for the log, taken before a removal below
  if (!committed.ok()) {
    auto path = store_->PathOf(ino);
    name = path.ok() ? *path : "inode " + std::to_string(ino);
  }
  std::vector<EvictedName> removed;
  if (!committed.ok() && file->first_content()) {
    // Its first content refused: the file goes, as if its creation had been part of the commit
    // (a set must not keep `.kv` names that no engine can open). Under the staged file's lock:
    // no other content can commit meanwhile.
    HoldIfReferenced(ino);
    auto gone = store_->RemoveIfEmpty(ino);
    if (gone.ok()) {
      removed = std::move(*gone);
    } else {
      KDN_LOG_ERROR("cannot remove inode %llu after its first content failed: %s",
                    static_cast<unsigned long long>(ino), gone.status().ToString().c_str());
    }
  }
  file->Retire();
  // Unlocked before the kernel is told: a read of this inode that holds the kernel's page lock
  // may be waiting for the staged file.
  staged.lock.unlock();
  Unstage(ino, file);
  KernelCache* cache = kernel_cache_.load();
  if (committed.ok()) {
    // Written here: no longer a copy of an origin object, and the origin's source from now on.
    if (reader_) reader_->Detach(ino);
    counters_.commits.fetch_add(1, std::memory_order_relaxed);
    counters_.commit_bytes.fetch_add(bytes, std::memory_order_relaxed);
    // The store's ctime and block count: the kernel asks again.
    if (cache) cache->InvalidateInode(ino, false);
    return Status::OK();
  }
  const Status& error = committed.status();
  // The staging file's name means nothing to the user: the file's name is what they need.
  std::string message = error.message();
  if (message.starts_with(file->path() + ": ")) message.erase(0, file->path().size() + 2);
  if (error.code() == Code::kInvalidArgument) {
    counters_.refused_kv.fetch_add(1, std::memory_order_relaxed);
    KDN_LOG_ERROR("refused %s (%s): %s; the previous content stays", name.c_str(), why,
                  message.c_str());
  } else {
    counters_.commit_errors.fetch_add(1, std::memory_order_relaxed);
    KDN_LOG_ERROR("commit of %s (%s) failed: %s; the previous content stays", name.c_str(), why,
                  error.ToString().c_str());
  }
  // The kernel's pages and size are those of the refused bytes.
  if (cache) cache->InvalidateInode(ino, true);
  for (const EvictedName& n : removed) {
    KDN_LOG_INFO("removed %s: its first content was not committed", name.c_str());
    if (cache) cache->ForgetName(n.parent, n.name, n.ino);
  }
  return error;
}

Status Filesystem::Flush(const Caller& caller, Ino ino) {
  if (ControlFiles::IsControl(ino)) return Status::OK();
  std::shared_ptr<StagedFile> file = StagedOf(ino);
  if (!file) return Status::OK();
  if (blocking_hook_ != nullptr) blocking_hook_();
  std::unique_lock lock(file->mutex());
  if (file->retired() || !IsWriter(*file, caller)) return Status::OK();
  return Commit(ino, StagedLock{std::move(file), std::move(lock)}, "close");
}

Status Filesystem::Fsync(const Caller& caller, Ino ino) {
  (void)caller;
  if (ControlFiles::IsControl(ino)) return Status::OK();
  if (blocking_hook_ != nullptr) blocking_hook_();
  if (std::shared_ptr<StagedFile> file = StagedOf(ino)) {
    std::unique_lock lock(file->mutex());
    if (!file->retired()) {
      KDN_RETURN_IF_ERROR(Commit(ino, StagedLock{std::move(file), std::move(lock)}, "fsync"));
    }
  }
  // Everything that returned before, this file's commit included, becomes durable against
  // power loss (committed changes are otherwise synced within a second: store.h).
  KDN_RETURN_IF_ERROR(store_->Sync());
  // With an origin, and on the origin too (`kdnctl sync MNT` is an fsync of the mountpoint).
  if (uploader_) {
    Status uploaded = uploader_->WaitUploaded();
    if (!uploaded.ok()) {
      KDN_LOG_ERROR("fsync: %s", uploaded.ToString().c_str());
      return Errno(EIO, uploaded.message());
    }
  }
  return Status::OK();
}

void Filesystem::CommitIdle() {
  std::vector<std::pair<Ino, std::shared_ptr<StagedFile>>> all;
  {
    MutexLock lock(mu_);
    for (const auto& [ino, st] : inodes_) {
      if (st.staged) all.emplace_back(ino, st.staged);
    }
  }
  auto now = StagedFile::Clock::now();
  for (auto& [ino, file] : all) {
    std::unique_lock lock(file->mutex(), std::try_to_lock);
    if (!lock.owns_lock() || file->retired()) continue;
    if (now - file->last_change() < options_.idle_commit) continue;
    bool writer_alive = false;
    for (const auto& w : file->writers()) writer_alive |= processes_->Alive(w.first);
    if (writer_alive) continue;
    (void)Commit(ino, StagedLock{std::move(file), std::move(lock)}, "writers exited");
  }
}

void Filesystem::CommitAll() {
  std::vector<std::pair<Ino, std::shared_ptr<StagedFile>>> all;
  {
    MutexLock lock(mu_);
    for (const auto& [ino, st] : inodes_) {
      if (st.staged) all.emplace_back(ino, st.staged);
    }
  }
  for (auto& [ino, file] : all) {
    std::unique_lock lock(file->mutex());
    if (file->retired()) continue;
    (void)Commit(ino, StagedLock{std::move(file), std::move(lock)}, "unmount");
  }
}

size_t Filesystem::staged_count() {
  MutexLock lock(mu_);
  size_t n = 0;
  for (const auto& [ino, st] : inodes_) n += st.staged ? 1 : 0;
  return n;
}

// ---- the rest ---------------------------------------------------------------------------------

Result<StoreUsage> Filesystem::StatFs() {
  return store_->Usage();
}

namespace {

// Names kdnfs does not keep: ACLs (kdnfs has none; the kernel checks modes) and file
// capabilities (a knowledge store holds no executables, and answering "none" without a database
// query keeps every write(2) fast: the kernel asks for it before each one).
bool Unsupported(std::string_view name) {
  return name.starts_with("system.") || name == "security.capability";
}

bool VisibleTo(const Caller& caller, std::string_view name) {
  return caller.uid == 0 || !name.starts_with("trusted.");
}

// user.kdn.trust on a directory: the uids whose `.kv` files the set's prefix lookups may hand out
// besides its owner's (control_files.h). Only the set's owner or root may change it: a user who
// may write the set must not be able to trust themselves. `value` null: remove it.
Status SetTrust(Store& store, const Caller& caller, Ino ino, const std::string* value,
                XattrSetMode mode) {
  KDN_ASSIGN_OR_RETURN(InodeAttr attr, store.GetAttr(ino));
  if (!S_ISDIR(attr.mode)) {
    return Errno(EPERM, std::string(kTrustXattr) + " applies to directories (knowledge sets)");
  }
  if (caller.uid != 0 && caller.uid != attr.uid) {
    return Errno(EPERM, "only the owner of a set or root may change whom it trusts");
  }
  if (value == nullptr) {
    Status st = store.RemoveXattr(ino, kTrustXattr);
    if (st.IsNotFound()) return Errno(ENODATA, st.message());
    return st;
  }
  KDN_ASSIGN_OR_RETURN(std::vector<uint32_t> uids, ParseTrustList(*value));
  Status st = store.SetXattr(ino, kTrustXattr, FormatTrustList(uids), mode);
  if (st.IsNotFound()) return Errno(ENODATA, st.message());
  return st;
}

}  // namespace

Result<std::string> Filesystem::GetXattr(const Caller& caller, Ino ino, std::string_view name) {
  (void)caller;
  if (ControlFiles::IsControl(ino) || Unsupported(name)) {
    return Status::NotFound("no attribute " + std::string(name));
  }
  if (name == kTrustXattr || name == kQuotaXattr) return store_->GetXattr(ino, name);
  if (IsKdnXattr(name)) {
    KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_->GetAttr(ino));
    if (name == kOriginXattr && uploader_ && S_ISREG(attr.mode)) {
      if (OverlayStaged(attr)) return std::string("staged");  // not committed: nothing queued
      if (reader_->RemoteOf(attr)) {
        // A copy of an origin object: fetched, or only known from the listing so far.
        return std::string(attr.chunk.IsZero() && attr.size == 0 ? "remote" : "fetched");
      }
      return uploader_->UploadState(attr);
    }
    return GetKdnXattr(*store_, attr, name);
  }
  return store_->GetXattr(ino, name);
}

Status Filesystem::SetXattr(const Caller& caller, Ino ino, std::string_view name,
                            std::string_view value, int flags) {
  if (ControlFiles::IsControl(ino)) return ControlRefused();
  if (Unsupported(name)) return Errno(EOPNOTSUPP, "kdnfs does not keep " + std::string(name));
  XattrSetMode mode = XattrSetMode::kAny;
  if (flags & XATTR_CREATE) mode = XattrSetMode::kCreate;
  if (flags & XATTR_REPLACE) mode = XattrSetMode::kReplace;
  if (name == kTrustXattr) {
    const std::string text(value);
    return SetTrust(*store_, caller, ino, &text, mode);
  }
  if (name == kQuotaXattr) {
    const std::string text(value);
    return SetQuota(caller, ino, &text, mode);
  }
  if (IsKdnXattr(name)) {
    KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_->GetAttr(ino));
    return SetKdnXattr(*store_, attr, name, value);
  }
  const std::string note = name.starts_with("user.") ? MetadataNoteFor(ino) : std::string();
  Status st = store_->SetXattr(ino, name, value, mode, note);
  if (st.ok() && !note.empty()) uploader_->Kick();
  // XATTR_REPLACE of a missing attribute is ENODATA.
  if (st.IsNotFound()) return Errno(ENODATA, st.message());
  return st;
}

Result<std::vector<std::string>> Filesystem::ListXattr(const Caller& caller, Ino ino) {
  if (ControlFiles::IsControl(ino)) return std::vector<std::string>{};
  KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_->GetAttr(ino));
  KDN_ASSIGN_OR_RETURN(std::vector<std::string> names, ListKdnXattrs(*store_, attr));
  if (uploader_ && S_ISREG(attr.mode)) names.emplace_back(kOriginXattr);
  KDN_ASSIGN_OR_RETURN(std::vector<std::string> stored, store_->ListXattr(ino));
  for (auto& n : stored) {
    if (n == edge::kRemoteXattr) continue;  // kdnfs's own record (edge/origin_reader.h)
    if (VisibleTo(caller, n)) names.push_back(std::move(n));
  }
  return names;
}

Status Filesystem::RemoveXattr(const Caller& caller, Ino ino, std::string_view name) {
  if (ControlFiles::IsControl(ino)) return ControlRefused();
  if (Unsupported(name)) return Status::NotFound("no attribute " + std::string(name));
  if (name == kTrustXattr) return SetTrust(*store_, caller, ino, nullptr, XattrSetMode::kAny);
  if (name == kQuotaXattr) return SetQuota(caller, ino, nullptr, XattrSetMode::kAny);
  if (IsKdnXattr(name)) {
    KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_->GetAttr(ino));
    return SetKdnXattr(*store_, attr, name, "0");
  }
  const std::string note = name.starts_with("user.") ? MetadataNoteFor(ino) : std::string();
  KDN_RETURN_IF_ERROR(store_->RemoveXattr(ino, name, note));
  if (!note.empty()) uploader_->Kick();
  return Status::OK();
}

std::string Filesystem::StatsText() {
  StoreStats s = store_->Stats();
  StoreUsage u = store_->Usage();
  std::ostringstream out;
  auto line = [&out](const char* name, const auto& value) { out << name << ' ' << value << '\n'; };
  line("io_engine", s.io_engine);
  line("capacity_bytes", u.capacity_bytes);
  line("used_bytes", u.used_bytes);
  line("free_bytes", u.free_bytes);
  line("files", s.files);
  line("directories", s.directories);
  line("inodes", u.inodes);
  line("chunks", s.chunks);
  line("logical_bytes", s.logical_bytes);
  line("stored_bytes", s.stored_bytes);
  line("allocated_bytes", s.allocated_bytes);
  line("dedup_ratio", Ratio(s.dedup_ratio));
  line("kv_chunks", s.kv_chunks);
  line("kv_raw_bytes", s.kv_raw_bytes);
  line("kv_stored_bytes", s.kv_stored_bytes);
  line("compression_ratio", Ratio(s.compression_ratio));
  line("puts", s.puts);
  line("put_bytes", s.put_bytes);
  line("dedup_hits", s.dedup_hits);
  line("reads", s.reads);
  line("read_bytes", s.read_bytes);
  line("prefix_lookups", s.prefix_lookups);
  line("prefix_hits", s.prefix_hits);
  line("prefix_hit_ratio",
       Ratio(s.prefix_lookups ? double(s.prefix_hits) / double(s.prefix_lookups) : 0.0));
  line("evictions", s.evictions);
  line("evicted_bytes", s.evicted_bytes);
  line("errors", s.errors);
  line("log_syncs", s.log_syncs);
  line("unsynced_changes", s.unsynced_changes);
  line("read_latency_p50_us", Ratio(double(s.read_latency_p50_ns) / 1000.0));
  line("read_latency_p90_us", Ratio(double(s.read_latency_p90_ns) / 1000.0));
  line("read_latency_p99_us", Ratio(double(s.read_latency_p99_ns) / 1000.0));
  line("read_latency_max_us", Ratio(double(s.read_latency_max_ns) / 1000.0));
  line("fs_reads", counters_.reads.load());
  line("fs_read_bytes", counters_.read_bytes.load());
  line("fs_writes", counters_.writes.load());
  line("fs_write_bytes", counters_.write_bytes.load());
  line("commits", counters_.commits.load());
  line("commit_bytes", counters_.commit_bytes.load());
  line("refused_kv", counters_.refused_kv.load());
  line("commit_errors", counters_.commit_errors.load());
  line("staged_files", staged_count());
  line("passthrough", counters_.passthrough.load() ? "on" : "off");
  line("passthrough_opens", counters_.passthrough_opens.load());
  line("served_opens", counters_.served_opens.load());
  line("backing_files", counters_.backing_files.load());
  if (uploader_) {
    const edge::UploaderCounters& c = uploader_->counters();
    auto state = store_->GetOutboxState();
    line("origin", uploader_->origin().Describe());
    line("origin_queue", state.ok() ? state->notes : 0);
    line("origin_chunk_uploads", c.chunk_uploads.load());
    line("origin_chunks_present", c.chunk_present.load());
    line("origin_chunk_refreshes", c.chunk_refreshes.load());
    line("origin_upload_bytes", c.upload_bytes.load());
    line("origin_ns_puts", c.ns_puts.load());
    line("origin_ns_deletes", c.ns_deletes.load());
    line("origin_upload_errors", c.errors.load());
    std::string last = uploader_->last_error();
    for (char& ch : last) {
      if (ch == '\n') ch = ' ';
    }
    line("origin_last_error", last.empty() ? std::string("none") : last);
    const edge::ReaderCounters& r = reader_->counters();
    line("origin_listings", r.listings.load());
    line("origin_listing_errors", r.listing_errors.load());
    line("origin_names_added", r.names_added.load());
    line("origin_names_changed", r.names_changed.load());
    line("origin_names_removed", r.names_removed.load());
    line("origin_fetches", r.fetches.load());
    line("origin_fetch_bytes", r.fetch_bytes.load());
    line("origin_fetch_errors", r.fetch_errors.load());
    line("origin_fetches_running", r.fetches_running.load());
    line("origin_reads_before_commit", r.reads_before_commit.load());
    const uint64_t fetches = r.fetches.load();
    line("origin_fetch_mean_ms",
         Ratio(fetches ? double(r.fetch_ns_total.load()) / double(fetches) / 1e6 : 0.0));
  }
  requests_->Render(out);
  return out.str();
}

std::string Filesystem::MetricsText() {
  const StoreStats stats = store_->Stats();
  const StoreUsage usage = store_->Usage();
  return RenderMetrics(MetricsSources{stats, usage, counters_, staged_count(), *requests_});
}

}  // namespace kdn::fs
