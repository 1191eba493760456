// The namespace: inodes, directory entries, xattrs and attributes in the store's database.
//
// Layout (in the style of 3FS: one file per metadata operation, so each is easy to find):
//   create.cc    MakeNode            link.cc     Link            unlink.cc   Unlink, RemoveIfEmpty
//   rmdir.cc     Rmdir               rename.cc   Rename          setattr.cc  SetAttr, SetEvictable,
//   lookup.cc    GetAttr, Lookup,    readdir.cc  ReadDir                     SetPinned
//                ReadLink            xattr.cc    *Xattr          open.cc     OpenInode, CloseInode
//   paths.cc     PathOf, PathsOf,    content.cc  SetContent,     outbox.cc   the outbox notes
//                ParentsOf                       CommitFileContent
//   prefix.cc    LookupPrefix*       usage.cc    InodesWithChunk, FileBytesOf*
//   reclaim.cc   DropInode, DropLink (shared with eviction and recovery)
//   evict.cc     RemoveFilesWithContent (eviction's part: the files an evicted chunk takes along),
//                handed to the chunk store at open (ReleaseNamesForChunks)
//   common.cc    the helpers below
// Each operation is one transaction of the transaction layer (store::TxnLog::Write, store/txn.h;
// reads lease a pool connection). The namespace refers to content only by chunk id and takes and
// drops references through the chunk store (store/chunk_store.h): dependencies point namespace ->
// chunk store -> transaction layer.
//
// This header: the helpers the operations share (loading inodes and entries inside a transaction,
// name checks, link counts). Internal to libkdn_store.
#ifndef KDN_STORE_NAMESPACE_NAMESPACE_H_
#define KDN_STORE_NAMESPACE_NAMESPACE_H_

#include <cerrno>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "kdn/status.h"
#include "kdn/store.h"
#include "store/sqlite_db.h"

namespace kdn::store {

// The namespace's open counts (Store::OpenInode / CloseInode). Its lock is held by opens and
// closes and, through COMMIT, by the transactions that may delete inodes (Write's lock_opens,
// taken after the writer's lock), so an inode is never deleted while an open of it is in
// progress; under it too chunk files are renamed into place and unlinked.
class OpenCounts {
 public:
  std::mutex& mu() { return mu_; }
  // The callers of these hold mu().
  bool IsOpen(Ino ino) const {
    auto it = counts_.find(ino);
    return it != counts_.end() && it->second > 0;
  }
  void Open(Ino ino) { ++counts_[ino]; }
  // One close: the opens left, or nothing when `ino` was not open.
  std::optional<uint32_t> Close(Ino ino) {
    auto it = counts_.find(ino);
    if (it == counts_.end()) return std::nullopt;
    const uint32_t left = --it->second;
    if (left == 0) counts_.erase(it);
    return left;
  }

 private:
  std::mutex mu_;
  std::unordered_map<Ino, uint32_t> counts_;
};

}  // namespace kdn::store

namespace kdn::store::ns {

// Columns of an inode as ReadAttr expects them.
#define KDN_INODE_COLS                                                                         \
  "i.ino, i.mode, i.uid, i.gid, i.nlink, i.size, i.atime, i.mtime, i.ctime, i.rdev, i.chunk, " \
  "i.evictable, i.pinned"

InodeAttr ReadAttr(const Stmt& q, int c);

inline Status Errno(int err, const std::string& what) {
  return Status::FromErrno(what, err);
}

inline std::string Quote(std::string_view name) {
  return "'" + std::string(name) + "'";
}

inline std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

Status CheckName(std::string_view name);

inline bool Keeps(const InodeAttr& a) {
  return !a.evictable || a.pinned;
}

Result<InodeAttr> LoadInode(Db& db, Ino ino);

// A directory that can receive entries.
Result<InodeAttr> LoadDir(Db& db, Ino ino);

struct Dentry {
  int64_t id = 0;
  Ino ino = 0;
};

Result<std::optional<Dentry>> FindDentry(Db& db, Ino parent, std::string_view name);
Status TouchDir(Db& db, Ino dir, int64_t now);
Status AddNlink(Db& db, Ino ino, int64_t delta, int64_t ctime);
Status SetParent(Db& db, Ino dir, Ino parent);
Result<bool> DirIsEmpty(Db& db, Ino dir);

// Whether `dir` is `ancestor` or lies below it (walking up through the directories' parents).
Result<bool> IsWithin(Db& db, Ino dir, Ino ancestor);

inline int64_t Resolve(int64_t t, int64_t now) {
  return t == kTimeNow ? now : t;
}

}  // namespace kdn::store::ns

#endif  // KDN_STORE_NAMESPACE_NAMESPACE_H_
