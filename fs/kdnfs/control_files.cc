#include "fs/kdnfs/control_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "fs/kdnfs/log.h"
#include "fs/kdnfs/metrics.h"
#include "fs/kdnfs/staged_file.h"

namespace kdn::fs {
namespace {

// Virtual files change behind the kernel's back, and answers depend on the caller: the kernel
// must ask again every time.
constexpr double kNoCache = 0.0;
// The directories themselves never change.
constexpr double kForever = 86400.0;

// What a user other than root and the store's owner reads in /.kdn/stats. Figures about the
// caller's own files would need an inode per user (the kernel caches a file's pages per inode, not
// per reader), and the store-wide ones are an existence oracle for deduplicated content.
static_assert(kMaxTrustedUids + 1 <= Store::kMaxPrefixOwners,
              "a set's owners must fit one prefix query");

constexpr std::string_view kUserStatsText = "store_wide_counters 0\n";

Status NotFound(std::string_view name) {
  return Status::NotFound("no such control file: " + std::string(name));
}

// Search permission on a directory, as the kernel decides it with default_permissions: root
// (CAP_DAC_READ_SEARCH) may search any directory; others by the owner, group or other class, the
// first class that applies and only that one.
bool CanSearch(const Caller& caller, const InodeAttr& dir) {
  if (caller.uid == 0) return true;
  if (caller.uid == dir.uid) return (dir.mode & S_IXUSR) != 0;
  if (caller.InGroup(dir.gid)) return (dir.mode & S_IXGRP) != 0;
  return (dir.mode & S_IXOTH) != 0;
}

}  // namespace

ControlFiles::ControlFiles(Store& store, std::function<std::string()> stats_text,
                           std::function<std::string()> metrics_text, uint32_t owner_uid)
    : store_(store),
      stats_text_(std::move(stats_text)),
      metrics_text_(std::move(metrics_text)),
      owner_uid_(owner_uid),
      created_ns_(NowNs()) {}

InodeAttr ControlFiles::DirAttr(Ino ino) const {
  InodeAttr a;
  a.ino = ino;
  a.mode = S_IFDIR | 0555;
  a.nlink = ino == kControlDirIno ? 3 : 2;
  a.atime_ns = a.mtime_ns = a.ctime_ns = created_ns_;
  return a;
}

InodeAttr ControlFiles::StatsAttr() const {
  InodeAttr a;
  a.ino = kStatsIno;
  // Readable by its owner (and root) only: even a user who wins a race for the kernel's cached
  // name cannot open it.
  a.mode = S_IFREG | 0400;
  a.uid = owner_uid_;
  a.nlink = 1;
  a.size = stats_.size();
  // A new mtime per snapshot: the kernel drops the pages it cached of the previous one.
  a.atime_ns = a.mtime_ns = a.ctime_ns = stats_ns_;
  return a;
}

InodeAttr ControlFiles::UserStatsAttr() const {
  InodeAttr a;
  a.ino = kUserStatsIno;
  a.mode = S_IFREG | 0444;
  a.nlink = 1;
  a.size = kUserStatsText.size();
  a.atime_ns = a.mtime_ns = a.ctime_ns = created_ns_;
  return a;
}

InodeAttr ControlFiles::MetricsAttr() const {
  InodeAttr a;
  a.ino = kMetricsIno;
  a.mode = S_IFREG | 0400;  // as StatsAttr
  a.uid = owner_uid_;
  a.nlink = 1;
  a.size = metrics_.size();
  a.atime_ns = a.mtime_ns = a.ctime_ns = metrics_ns_;
  return a;
}

InodeAttr ControlFiles::UserMetricsAttr() const {
  InodeAttr a;
  a.ino = kUserMetricsIno;
  a.mode = S_IFREG | 0444;
  a.nlink = 1;
  a.size = kUnprivilegedMetricsText.size();
  a.atime_ns = a.mtime_ns = a.ctime_ns = created_ns_;
  return a;
}

InodeAttr ControlFiles::LinkAttr(Ino ino, const Link& link) {
  InodeAttr a;
  a.ino = ino;
  a.mode = S_IFLNK | 0777;
  a.nlink = 1;
  a.size = link.target.size();
  return a;
}

Result<Entry> ControlFiles::Lookup(const Caller& caller, Ino parent, std::string_view name) {
  if (parent == kRootIno) {
    if (name != kControlDirName) return NotFound(name);
    return Entry{DirAttr(kControlDirIno), kForever, kForever};
  }
  if (parent == kControlDirIno) {
    if (name == "stats") {
      if (!Privileged(caller)) return Entry{UserStatsAttr(), kNoCache, kNoCache};
      std::string text = stats_text_();
      MutexLock lock(mu_);
      stats_ = std::move(text);
      stats_ns_ = std::max(NowNs(), stats_ns_ + 1);
      return Entry{StatsAttr(), kNoCache, kNoCache};
    }
    if (name == "metrics") {
      if (!Privileged(caller)) return Entry{UserMetricsAttr(), kNoCache, kNoCache};
      std::string text = metrics_text_();
      MutexLock lock(mu_);
      metrics_ = std::move(text);
      metrics_ns_ = std::max(NowNs(), metrics_ns_ + 1);
      return Entry{MetricsAttr(), kNoCache, kNoCache};
    }
    if (name == "by-id") return Entry{DirAttr(kByIdDirIno), kForever, kForever};
    return NotFound(name);
  }
  if (parent == kByIdDirIno) return LookupById(caller, name);
  if (IsSetPrefixDir(parent)) return LookupInSet(parent - kSetPrefixDirBase, name);
  return Status::FromErrno("not a control directory", ENOTDIR);
}

Result<Entry> ControlFiles::LookupSetPrefixDir(Ino dir) {
  KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_.GetAttr(dir));
  if (!S_ISDIR(attr.mode)) return Status::FromErrno("not a directory", ENOTDIR);
  return Entry{DirAttr(kSetPrefixDirBase + dir), kForever, kForever};
}

Result<bool> ControlFiles::Reachable(const Caller& caller, std::string_view path) {
  Ino dir = kRootIno;
  // Every component but the last is a directory the caller must be able to search.
  while (true) {
    if (!path.starts_with('/')) return false;
    path.remove_prefix(1);
    size_t slash = path.find('/');
    KDN_ASSIGN_OR_RETURN(InodeAttr attr, store_.GetAttr(dir));
    if (!S_ISDIR(attr.mode) || !CanSearch(caller, attr)) return false;
    if (slash == std::string_view::npos) return true;
    auto next = store_.Lookup(dir, path.substr(0, slash));
    if (!next.ok()) return false;  // renamed meanwhile
    dir = next->ino;
    path.remove_prefix(slash);
  }
}

Result<Entry> ControlFiles::LookupById(const Caller& caller, std::string_view name) {
  // The id type's own parser: ids need not stay 32 hex digits.
  auto id = ChunkId::FromHex(name);
  if (!id.ok() || id->IsZero()) return NotFound(name);
  KDN_ASSIGN_OR_RETURN(auto inodes, store_.InodesWithChunk(*id, 16));
  for (Ino ino : inodes) {
    auto path = store_.PathOf(ino);
    if (!path.ok()) continue;  // unlinked meanwhile
    KDN_ASSIGN_OR_RETURN(bool reachable, Reachable(caller, *path));
    if (!reachable) continue;
    // From /.kdn/by-id/ up to the root, then down the file's path (PathOf starts with '/').
    return MakeLink("by-id/" + std::string(name), "../.." + *path);
  }
  // The same answer whether no file holds the chunk or the caller may not see it.
  return NotFound(name);
}

bool ControlFiles::ChainHolds(const InodeAttr& file, const Hash128& hash) {
  if (file.chunk.IsZero() || file.size < kKvFixedHeaderBytes) return false;
  auto read_all = [&](std::span<std::byte> out) -> Status {
    size_t done = 0;
    while (done < out.size()) {
      KDN_ASSIGN_OR_RETURN(size_t n, store_.Get(file.chunk, done, out.subspan(done)));
      if (n == 0) return Status::Corruption("chunk shorter than its file");
      done += n;
    }
    return Status::OK();
  };
  std::byte fixed[kKvFixedHeaderBytes];
  if (!read_all(fixed).ok()) return false;
  auto header_bytes = KvHeaderBytes(fixed, file.size);
  if (!header_bytes.ok() || *header_bytes > kMaxPrefixHeaderBytes) return false;
  std::vector<std::byte> header;
  try {
    header.resize(*header_bytes);
  } catch (const std::bad_alloc&) {
    KDN_LOG_WARNING("prefix lookup: no memory for a header of %llu bytes",
                    static_cast<unsigned long long>(*header_bytes));
    return false;
  }
  if (!read_all(header).ok()) return false;
  auto parsed = ParseKvHeader(header, file.size);
  return parsed.ok() && PrefixTokensOf(*parsed, hash).ok();
}

Result<DirPrefixMatch> ControlFiles::FindInSet(Ino dir, const Hash128& hash) {
  KDN_ASSIGN_OR_RETURN(InodeAttr set, store_.GetAttr(dir));
  if (!S_ISDIR(set.mode)) return Status::FromErrno("not a directory", ENOTDIR);
  std::vector<uint32_t> listed;
  if (auto text = store_.GetXattr(dir, kTrustXattr); text.ok()) {
    // kdnfs refuses to store an invalid list; one that does not parse trusts nobody extra.
    if (auto uids = ParseTrustList(*text); uids.ok()) listed = std::move(*uids);
  }
  const std::vector<uint32_t> owners = TrustedOwners(set.uid, listed);
  KDN_ASSIGN_OR_RETURN(auto matches, store_.LookupPrefixInDir(dir, hash, owners, 16));
  for (DirPrefixMatch& m : matches) {
    if (!m.name.ends_with(".kv")) continue;
    if (std::find(owners.begin(), owners.end(), m.attr.uid) == owners.end()) continue;
    // The index said so; the file's own tokens must say so too.
    if (!ChainHolds(m.attr, hash)) {
      KDN_LOG_WARNING(
          "prefix lookup: %s in directory %llu is indexed under %s but its tokens do "
          "not chain to it; not answered",
          m.name.c_str(), static_cast<unsigned long long>(dir), hash.ToHex().c_str());
      continue;
    }
    return std::move(m);
  }
  return Status::NotFound("no trusted file of this set holds prefix " + hash.ToHex());
}

Result<Entry> ControlFiles::LookupInSet(Ino dir, std::string_view name) {
  auto hash = Hash128::FromHex(name);
  if (!hash.ok()) return NotFound(name);
  auto found = FindInSet(dir, *hash);
  if (!found.ok()) return found.status().IsNotFound() ? NotFound(name) : found.status();
  return MakeLink("set/" + std::to_string(dir) + "/" + std::string(name), "../" + found->name);
}

Result<Entry> ControlFiles::MakeLink(std::string key, std::string target) {
  MutexLock lock(mu_);
  Ino ino = 0;
  if (auto it = link_by_key_.find(key); it != link_by_key_.end()) {
    auto link = links_.find(it->second);
    if (link != links_.end() && link->second.target == target) ino = it->second;
  }
  if (ino == 0) {
    if (next_link_ino_ >= kSetPrefixDirBase) return Status::FromErrno("out of link inodes", ENOSPC);
    ino = next_link_ino_++;
    links_[ino] = Link{key, std::move(target), 0};
    link_by_key_[key] = ino;
  }
  Link& link = links_[ino];
  ++link.nlookup;
  return Entry{LinkAttr(ino, link), kNoCache, kNoCache};
}

void ControlFiles::Forget(Ino ino, uint64_t count) {
  MutexLock lock(mu_);
  auto it = links_.find(ino);
  if (it == links_.end()) return;
  it->second.nlookup -= std::min(count, it->second.nlookup);
  if (it->second.nlookup > 0) return;
  auto by_key = link_by_key_.find(it->second.key);
  if (by_key != link_by_key_.end() && by_key->second == ino) link_by_key_.erase(by_key);
  links_.erase(it);
}

Result<InodeAttr> ControlFiles::GetAttr(Ino ino) {
  if (IsControlDir(ino)) return DirAttr(ino);
  if (ino == kUserStatsIno) return UserStatsAttr();
  if (ino == kUserMetricsIno) return UserMetricsAttr();
  MutexLock lock(mu_);
  if (ino == kStatsIno) return StatsAttr();
  if (ino == kMetricsIno) return MetricsAttr();
  auto it = links_.find(ino);
  if (it == links_.end()) return Status::NotFound("stale control file inode");
  return LinkAttr(ino, it->second);
}

Result<size_t> ControlFiles::Read(Ino ino, uint64_t offset, std::span<std::byte> out) {
  auto copy = [&](std::string_view text) -> size_t {
    if (offset >= text.size()) return 0;
    size_t n = std::min<size_t>(out.size(), text.size() - offset);
    std::memcpy(out.data(), text.data() + offset, n);
    return n;
  };
  if (ino == kUserStatsIno) return copy(kUserStatsText);
  if (ino == kUserMetricsIno) return copy(kUnprivilegedMetricsText);
  if (ino == kMetricsIno) {
    MutexLock lock(mu_);
    return copy(metrics_);
  }
  if (ino != kStatsIno) {
    return IsControlDir(ino) ? Status::FromErrno("control file", EISDIR)
                             : Status::InvalidArgument("not a readable control file");
  }
  MutexLock lock(mu_);
  return copy(stats_);
}

Result<std::string> ControlFiles::ReadLink(Ino ino) {
  MutexLock lock(mu_);
  auto it = links_.find(ino);
  if (it == links_.end()) return Status::InvalidArgument("not a symlink");
  return it->second.target;
}

Result<std::vector<DirEntry>> ControlFiles::ReadDir(Ino ino, uint64_t cookie) {
  if (!IsControlDir(ino)) return Status::FromErrno("control file", ENOTDIR);
  std::vector<DirEntry> all;
  InodeAttr parent_attr = DirAttr(kControlDirIno);
  if (ino == kControlDirIno) {
    parent_attr = InodeAttr{};
    parent_attr.ino = kRootIno;
    parent_attr.mode = S_IFDIR | 0755;
  } else if (IsSetPrefixDir(ino)) {
    parent_attr = InodeAttr{};
    parent_attr.ino = ino - kSetPrefixDirBase;
    parent_attr.mode = S_IFDIR | 0755;
  }
  all.push_back(DirEntry{".", DirAttr(ino), 0});
  all.push_back(DirEntry{"..", parent_attr, 0});
  // Prefix and id directories are not listed: there may be millions of names in them.
  if (ino == kControlDirIno) {
    // The view any user gets; the store-wide one is reached by name only (its lookup knows who
    // asks, a listing does not).
    all.push_back(DirEntry{"stats", UserStatsAttr(), 0});
    all.push_back(DirEntry{"metrics", UserMetricsAttr(), 0});
    all.push_back(DirEntry{"by-id", DirAttr(kByIdDirIno), 0});
  }
  std::vector<DirEntry> out;
  for (size_t i = cookie; i < all.size(); ++i) {
    all[i].cookie = i + 1;
    out.push_back(std::move(all[i]));
  }
  return out;
}

}  // namespace kdn::fs
