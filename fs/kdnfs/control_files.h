// The control files: virtual inodes that kdnfs answers itself.
//
//   /.kdn/stats                text, one `name value` per line, a fresh snapshot at every path
//                              lookup. Store-wide figures (chunk, byte and dedup counters) tell
//                              whether a guessed file is already stored by someone, so only root
//                              and the store's owner (the daemon's uid) get them; every other
//                              user gets a file without them (a different inode, so that the
//                              kernel never serves one user the pages it cached for another).
//   /.kdn/metrics              the same figures in the Prometheus text format (metrics.h), fresh
//                              at every lookup, under the same rule: root and the store's owner
//                              get them, everyone else a file that says it holds none.
//   /.kdn/by-id/<hex>          symlink to a file whose content is the chunk with id <hex>, answered
//                              only when the caller could reach that file: search permission on
//                              every directory on its path, for the calling uid and groups;
//                              otherwise ENOENT (ids can be computed by anyone who can guess a
//                              document, so the name must not leak).
//   <dir>/.kdn-prefix/<hex>    prefix lookup scoped to a knowledge set (any directory <dir>):
//                              symlink "../<name>" to a `.kv` file named directly in <dir>, owned
//                              by a uid the set trusts (its owner, plus `user.kdn.trust`), whose
//                              own token ids chain to the prefix hash <hex> (32 hex digits). An
//                              engine reaches the file with one stat or open of that path (the
//                              kernel follows the link); readlink names it. The rules are in
//                              store/format/set_prefix.h, shared with libkdn's kdn_find_prefix.
//
// Neither /.kdn nor any .kdn-prefix is listed by readdir (so `ls`, `cp -r`, `du` and rsync do not
// see them), and the names in by-id and .kdn-prefix are not listed either, but any path through
// them resolves. The store-wide /.kdn/prefix of earlier versions is gone: it handed any user's
// file to every engine.
//
// Every answer that depends on the caller comes with entry and attribute timeouts of 0, so the
// kernel asks again, with the new caller's credentials, at every path walk. The symlinks point
// upwards so that they stay right wherever the filesystem is mounted. Their inode numbers lie
// above every store inode (store.h keeps those below 2^48); a symlink gets a new number whenever
// its target changes, so the kernel may cache a target for as long as it holds the inode.
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
#include "store/format/set_prefix.h"

namespace kdn::fs {

inline constexpr std::string_view kControlDirName = ".kdn";
inline constexpr Ino kControlDirIno = kMaxStoreIno + 1;
inline constexpr Ino kStatsIno = kMaxStoreIno + 2;  // the store-wide view (root, store owner)
// kMaxStoreIno + 3 was /.kdn/prefix.
inline constexpr Ino kByIdDirIno = kMaxStoreIno + 4;
inline constexpr Ino kUserStatsIno = kMaxStoreIno + 5;  // the view of every other user
inline constexpr Ino kMetricsIno = kMaxStoreIno + 6;      // store-wide (root, store owner)
inline constexpr Ino kUserMetricsIno = kMaxStoreIno + 7;  // every other user
inline constexpr Ino kFirstLinkIno = kMaxStoreIno + 16;
// <dir>/.kdn-prefix is inode kSetPrefixDirBase + <dir's inode>; symlinks stay below the base.
inline constexpr Ino kSetPrefixDirBase = Ino{1} << 56;

class ControlFiles {
 public:
  // `stats_text` renders the store-wide stats file; it is called at every lookup of /.kdn/stats
  // by root or `owner_uid` (the store's owner: the daemon's uid). `metrics_text` likewise for
  // /.kdn/metrics.
  ControlFiles(Store& store, std::function<std::string()> stats_text,
               std::function<std::string()> metrics_text, uint32_t owner_uid);

  static bool IsControl(Ino ino) { return ino > kMaxStoreIno; }
  static bool IsSetPrefixDir(Ino ino) {
    return ino > kSetPrefixDirBase && ino - kSetPrefixDirBase <= kMaxStoreIno;
  }
  static bool IsControlDir(Ino ino) {
    return ino == kControlDirIno || ino == kByIdDirIno || IsSetPrefixDir(ino);
  }

  // Looks `name` up in a control directory (or ".kdn" in the root). Counts a kernel reference
  // on success, like Filesystem::Lookup.
  Result<Entry> Lookup(const Caller& caller, Ino parent, std::string_view name);
  // The virtual `.kdn-prefix` directory of store directory `dir`.
  Result<Entry> LookupSetPrefixDir(Ino dir);
  void Forget(Ino ino, uint64_t count);
  Result<InodeAttr> GetAttr(Ino ino);
  Result<size_t> Read(Ino ino, uint64_t offset, std::span<std::byte> out);
  Result<std::string> ReadLink(Ino ino);
  // The whole listing of a control directory; cookies are positions.
  Result<std::vector<DirEntry>> ReadDir(Ino ino, uint64_t cookie);

  // The file of `dir` a prefix lookup of `hash` answers with (see the top of this file), or
  // kNotFound.
  Result<DirPrefixMatch> FindInSet(Ino dir, const Hash128& hash);
  // Whether `caller` may search every directory on the way to `path` ("/a/b.kv", from PathOf).
  Result<bool> Reachable(const Caller& caller, std::string_view path);

 private:
  struct Link {
    std::string key;  // "set/<dir ino>/<hex>" or "by-id/<hex>"
    std::string target;
    uint64_t nlookup = 0;
  };
  bool Privileged(const Caller& caller) const {
    return caller.uid == 0 || caller.uid == owner_uid_;
  }
  Result<Entry> LookupById(const Caller& caller, std::string_view name);
  Result<Entry> LookupInSet(Ino dir, std::string_view name);
  Result<Entry> MakeLink(std::string key, std::string target);
  // Whether the `.kv` content of `file` chains to `hash` by its own tokens (bounded read).
  bool ChainHolds(const InodeAttr& file, const Hash128& hash);
  InodeAttr DirAttr(Ino ino) const;
  InodeAttr StatsAttr() const KDN_REQUIRES(mu_);
  InodeAttr UserStatsAttr() const;
  InodeAttr MetricsAttr() const KDN_REQUIRES(mu_);
  InodeAttr UserMetricsAttr() const;
  static InodeAttr LinkAttr(Ino ino, const Link& link);

  Store& store_;
  std::function<std::string()> stats_text_;
  std::function<std::string()> metrics_text_;
  const uint32_t owner_uid_;
  const int64_t created_ns_;

  mutable Mutex mu_;
  std::string stats_ KDN_GUARDED_BY(mu_);  // the latest store-wide snapshot
  int64_t stats_ns_ KDN_GUARDED_BY(mu_) = 0;
  std::string metrics_ KDN_GUARDED_BY(mu_);  // the latest metrics snapshot
  int64_t metrics_ns_ KDN_GUARDED_BY(mu_) = 0;
  Ino next_link_ino_ KDN_GUARDED_BY(mu_) = kFirstLinkIno;
  std::unordered_map<Ino, Link> links_ KDN_GUARDED_BY(mu_);
  std::unordered_map<std::string, Ino> link_by_key_ KDN_GUARDED_BY(mu_);
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_CONTROL_FILES_H_
