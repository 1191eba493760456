// Queries over content and usage: InodesWithChunk, FileBytesOfOwner, FileBytesInDir.
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

Result<std::vector<Ino>> Store::InodesWithChunk(const ChunkId& chunk, size_t max_results) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT ino FROM inodes WHERE chunk = ? AND nlink > 0 "
                                           "ORDER BY ino LIMIT ?"));
  q.BindId(1, chunk).BindInt(2, static_cast<int64_t>(max_results));
  std::vector<Ino> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(q.U64(0));
  }
  return out;
}

Result<uint64_t> Store::FileBytesOfOwner(uint32_t uid) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT COALESCE(SUM((size + 4095) / 4096 * 4096), 0) "
                                           "FROM inodes WHERE uid = ? AND (mode & 61440) = 32768"));
  q.BindInt(1, uid);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.U64(0) : uint64_t{0};
}

Result<uint64_t> Store::FileBytesInDir(Ino dir) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT COALESCE(SUM((i.size + 4095) / 4096 * 4096), 0) "
                                           "FROM dentries d JOIN inodes i ON i.ino = d.ino "
                                           "WHERE d.parent = ? AND (i.mode & 61440) = 32768"));
  q.BindInt(1, dir);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.U64(0) : uint64_t{0};
}

}  // namespace kdn
