// ReadDir: a directory's entries from a cookie on.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <utility>

#include "store/clock.h"
#include "store/namespace/namespace.h"
#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::NowNs;
using store::PreparedChunk;
using store::RefKind;
using store::Stmt;
using store::TxnEffects;
using namespace store::ns;  // the helpers every operation shares (namespace.h)

Result<std::vector<DirEntry>> Store::ReadDir(Ino dir, uint64_t cookie, size_t max_entries) {
  std::vector<DirEntry> out;
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  KDN_ASSIGN_OR_RETURN(InodeAttr self, LoadInode(*db, dir));
  if (!S_ISDIR(self.mode)) return Errno(ENOTDIR, "readdir of inode " + std::to_string(dir));
  // Cookies: 1 after ".", 2 after "..", entry id + 2 after an entry.
  if (cookie == 0 && out.size() < max_entries) out.push_back(DirEntry{".", self, 1});
  if (cookie <= 1 && out.size() < max_entries) {
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT parent FROM inodes WHERE ino = ?"));
    q.BindInt(1, dir);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    Ino parent = row && !q.IsNull(0) ? q.U64(0) : kRootIno;
    Result<InodeAttr> up = LoadInode(*db, parent);
    out.push_back(DirEntry{"..", up.ok() ? *up : self, 2});
  }
  if (out.size() >= max_entries) return out;
  KDN_ASSIGN_OR_RETURN(Stmt q,
                       db->Prepare("SELECT d.id, d.name, " KDN_INODE_COLS
                                   " FROM dentries d JOIN inodes i ON i.ino = d.ino "
                                   "WHERE d.parent = ? AND d.id > ? ORDER BY d.id LIMIT ?"));
  q.BindInt(1, dir).BindInt(2, cookie >= 2 ? cookie - 2 : 0);
  q.BindInt(3, static_cast<int64_t>(max_entries - out.size()));
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    auto name = q.Blob(1);
    out.push_back(DirEntry{std::string(reinterpret_cast<const char*>(name.data()), name.size()),
                           ReadAttr(q, 2), q.U64(0) + 2});
  }
  return out;
}

}  // namespace kdn
