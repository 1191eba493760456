#include "fs/kdnfs/control_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fs/kdnfs/staged_file.h"

namespace kdn::fs {
namespace {

// Virtual files change behind the kernel's back: it must ask again every time.
constexpr double kNoCache = 0.0;
// The directories themselves never change.
constexpr double kForever = 86400.0;

Status NotFound(std::string_view name) {
  return Status::NotFound("no such control file: " + std::string(name));
}

}  // namespace

ControlFiles::ControlFiles(Store& store, std::function<std::string()> stats_text)
    : store_(store), stats_text_(std::move(stats_text)), created_ns_(NowNs()) {}

InodeAttr ControlFiles::DirAttr(Ino ino) const {
  InodeAttr a;
  a.ino = ino;
  a.mode = S_IFDIR | 0555;
  a.nlink = ino == kControlDirIno ? 4 : 2;
  a.atime_ns = a.mtime_ns = a.ctime_ns = created_ns_;
  return a;
}

InodeAttr ControlFiles::StatsAttr() const {
  InodeAttr a;
  a.ino = kStatsIno;
  a.mode = S_IFREG | 0444;
  a.nlink = 1;
  a.size = stats_.size();
  // A new mtime per snapshot: the kernel drops the pages it cached of the previous one.
  a.atime_ns = a.mtime_ns = a.ctime_ns = stats_ns_;
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

Result<Entry> ControlFiles::Lookup(Ino parent, std::string_view name) {
  if (parent == kRootIno) {
    if (name != kControlDirName) return NotFound(name);
    return Entry{DirAttr(kControlDirIno), kForever, kForever};
  }
  if (parent == kControlDirIno) {
    if (name == "stats") {
      std::string text = stats_text_();
      MutexLock lock(mu_);
      stats_ = std::move(text);
      stats_ns_ = std::max(NowNs(), stats_ns_ + 1);
      return Entry{StatsAttr(), kNoCache, kNoCache};
    }
    if (name == "prefix") return Entry{DirAttr(kPrefixDirIno), kForever, kForever};
    if (name == "by-id") return Entry{DirAttr(kByIdDirIno), kForever, kForever};
    return NotFound(name);
  }
  if (parent == kPrefixDirIno || parent == kByIdDirIno) return LookupLink(parent, name);
  return Status::FromErrno("not a control directory", ENOTDIR);
}

Result<Entry> ControlFiles::LookupLink(Ino parent, std::string_view name) {
  Ino holder = 0;
  if (parent == kPrefixDirIno) {
    auto hash = Hash128::FromHex(name);
    if (!hash.ok() || name.size() != 32) return NotFound(name);
    KDN_ASSIGN_OR_RETURN(auto matches, store_.LookupPrefix(*hash, 16));
    for (const auto& m : matches) {
      if (m.ino != 0) {
        holder = m.ino;
        break;
      }
    }
  } else {
    auto id = ChunkId::FromHex(name);
    if (!id.ok()) return NotFound(name);
    KDN_ASSIGN_OR_RETURN(auto inodes, store_.InodesWithChunk(*id, 1));
    if (!inodes.empty()) holder = inodes.front();
  }
  if (holder == 0) return NotFound(name);
  KDN_ASSIGN_OR_RETURN(std::string path, store_.PathOf(holder));
  // From /.kdn/<dir>/ up to the root, then down the file's path (PathOf starts with '/').
  std::string target = "../.." + path;

  std::string key = (parent == kPrefixDirIno ? "prefix/" : "by-id/") + std::string(name);
  MutexLock lock(mu_);
  Ino ino = 0;
  if (auto it = link_by_key_.find(key); it != link_by_key_.end()) {
    auto link = links_.find(it->second);
    if (link != links_.end() && link->second.target == target) ino = it->second;
  }
  if (ino == 0) {
    ino = next_link_ino_++;
    links_[ino] = Link{key, target, 0};
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
  MutexLock lock(mu_);
  if (ino == kStatsIno) return StatsAttr();
  auto it = links_.find(ino);
  if (it == links_.end()) return Status::NotFound("stale control file inode");
  return LinkAttr(ino, it->second);
}

Result<size_t> ControlFiles::Read(Ino ino, uint64_t offset, std::span<std::byte> out) {
  if (ino != kStatsIno) {
    return IsControlDir(ino) ? Status::FromErrno("control file", EISDIR)
                             : Status::InvalidArgument("not a readable control file");
  }
  MutexLock lock(mu_);
  if (offset >= stats_.size()) return size_t{0};
  size_t n = std::min<size_t>(out.size(), stats_.size() - offset);
  std::memcpy(out.data(), stats_.data() + offset, n);
  return n;
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
  InodeAttr parent_attr = ino == kControlDirIno ? InodeAttr{} : DirAttr(kControlDirIno);
  if (ino == kControlDirIno) {
    parent_attr.ino = kRootIno;
    parent_attr.mode = S_IFDIR | 0755;
  }
  all.push_back(DirEntry{".", DirAttr(ino), 0});
  all.push_back(DirEntry{"..", parent_attr, 0});
  // Prefix and id directories are not listed: there may be millions of names in them.
  if (ino == kControlDirIno) {
    {
      MutexLock lock(mu_);
      all.push_back(DirEntry{"stats", StatsAttr(), 0});
    }
    all.push_back(DirEntry{"prefix", DirAttr(kPrefixDirIno), 0});
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
