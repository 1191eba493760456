// The control files under /.kdn/: virtual inodes that kdnfs answers itself.
//
//   /.kdn/stats          text, one `name value` per line, a fresh snapshot at every path lookup
//   /.kdn/prefix/<hex>   symlink to the file that holds a `.kv` chunk whose chained prefix hash is
//                        <hex> (32 hex digits), so that an engine finds a cached prefix with one
//                        stat
//   /.kdn/by-id/<hex>    symlink to a file whose content is the chunk with id <hex>
//
// /.kdn is not listed by readdir of the root (so `ls`, `cp -r`, `du` and rsync do not see it) but
// any path through it resolves. The symlinks point upwards ("../../set/doc.kv") so that they stay
// right wherever the filesystem is mounted. Their inode numbers lie above every store inode
// (store.h keeps those below 2^48); a symlink gets a new number whenever its target changes, so
// the kernel may cache a target for as long as it holds the inode.
#ifndef KDN_FS_KDNFS_CONTROL_FILES_H_
#define KDN_FS_KDNFS_CONTROL_FILES_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/thread_annotations.h"
#include "fs/kdnfs/fs_types.h"
#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::fs {

inline constexpr std::string_view kControlDirName = ".kdn";
inline constexpr Ino kControlDirIno = kMaxStoreIno + 1;
inline constexpr Ino kStatsIno = kMaxStoreIno + 2;
inline constexpr Ino kPrefixDirIno = kMaxStoreIno + 3;
inline constexpr Ino kByIdDirIno = kMaxStoreIno + 4;
inline constexpr Ino kFirstLinkIno = kMaxStoreIno + 16;

class ControlFiles {
 public:
  // `stats_text` renders the stats file; it is called at every lookup of /.kdn/stats.
  ControlFiles(Store& store, std::function<std::string()> stats_text);

  static bool IsControl(Ino ino) { return ino > kMaxStoreIno; }
  static bool IsControlDir(Ino ino) {
    return ino == kControlDirIno || ino == kPrefixDirIno || ino == kByIdDirIno;
  }

  // Looks `name` up in a control directory (or ".kdn" in the root). Counts a kernel reference
  // on success, like Filesystem::Lookup.
  Result<Entry> Lookup(Ino parent, std::string_view name);
  void Forget(Ino ino, uint64_t count);
  Result<InodeAttr> GetAttr(Ino ino);
  Result<size_t> Read(Ino ino, uint64_t offset, std::span<std::byte> out);
  Result<std::string> ReadLink(Ino ino);
  // The whole listing of a control directory; cookies are positions.
  Result<std::vector<DirEntry>> ReadDir(Ino ino, uint64_t cookie);

 private:
  struct Link {
    std::string key;  // "prefix/<hex>" or "by-id/<hex>"
    std::string target;
    uint64_t nlookup = 0;
  };
  Result<Entry> LookupLink(Ino parent, std::string_view name);
  InodeAttr DirAttr(Ino ino) const;
  InodeAttr StatsAttr() const KDN_REQUIRES(mu_);
  static InodeAttr LinkAttr(Ino ino, const Link& link);

  Store& store_;
  std::function<std::string()> stats_text_;
  const int64_t created_ns_;

  mutable Mutex mu_;
  std::string stats_ KDN_GUARDED_BY(mu_);  // the latest snapshot
  int64_t stats_ns_ KDN_GUARDED_BY(mu_) = 0;
  Ino next_link_ino_ KDN_GUARDED_BY(mu_) = kFirstLinkIno;
  std::unordered_map<Ino, Link> links_ KDN_GUARDED_BY(mu_);
  std::unordered_map<std::string, Ino> link_by_key_ KDN_GUARDED_BY(mu_);
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_CONTROL_FILES_H_
