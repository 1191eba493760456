// Extended attributes: GetXattr, SetXattr, ListXattr, RemoveXattr.
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

Result<std::string> Store::GetXattr(Ino ino, std::string_view name) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT value FROM xattrs WHERE ino = ? AND name = ?"));
  q.BindInt(1, ino).BindBlob(2, AsBytes(name));
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (row) {
    auto v = q.Blob(0);
    return std::string(reinterpret_cast<const char*>(v.data()), v.size());
  }
  q.Reset();
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  return Status::NotFound("no attribute " + Quote(name));
}

Status Store::SetXattr(Ino ino, std::string_view name, std::string_view value, XattrSetMode mode,
                       std::string_view outbox_note) {
  if (name.empty() || name.size() > 255) return Errno(ERANGE, "attribute name length");
  if (value.size() > 65536) return Errno(E2BIG, "attribute value longer than 64 KiB");
  return impl_->txn.Write(false, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(LoadInode(db, ino).status());
    bool exists;
    uint64_t old_bytes = 0;  // name + value of the attribute replaced
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT length(name) + length(value) FROM xattrs "
                                              "WHERE ino = ? AND name = ?"));
      q.BindInt(1, ino).BindBlob(2, AsBytes(name));
      KDN_ASSIGN_OR_RETURN(exists, q.Step());
      if (exists) old_bytes = q.U64(0);
    }
    if (exists && mode == XattrSetMode::kCreate) {
      return Status::AlreadyExists("attribute " + Quote(name) + " exists");
    }
    if (!exists && mode == XattrSetMode::kReplace) {
      return Status::NotFound("no attribute " + Quote(name));
    }
    uint64_t inode_bytes = 0;  // every attribute of the inode
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT COALESCE(SUM(length(name) + "
                                              "length(value)), 0) FROM xattrs WHERE ino = ?"));
      q.BindInt(1, ino);
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (row) inode_bytes = q.U64(0);
    }
    const uint64_t new_bytes = name.size() + value.size();
    if (inode_bytes - old_bytes + new_bytes > kMaxXattrBytes) {
      return Errno(ENOSPC, "the inode's attributes would hold " +
                               std::to_string(inode_bytes - old_bytes + new_bytes) +
                               " bytes, more than " + std::to_string(kMaxXattrBytes));
    }
    if (new_bytes > old_bytes) {
      // Capacity for the growth; the transaction's effects turn it into used bytes. Checked
      // against what is used and reserved now: attributes are small and never evict content.
      const uint64_t grow = new_bytes - old_bytes;
      if (!impl_->chunks.HasRoomFor(grow)) {
        return Status::NoSpace("store is full: no room for " + std::to_string(grow) +
                               " more bytes of extended attributes");
      }
    }
    fx.xattr_bytes_delta += static_cast<int64_t>(new_bytes) - static_cast<int64_t>(old_bytes);
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT OR REPLACE INTO xattrs(ino, name, value) "
                                            "VALUES(?, ?, ?)"));
    q.BindInt(1, ino).BindBlob(2, AsBytes(name)).BindBlob(3, AsBytes(value));
    KDN_RETURN_IF_ERROR(q.Run());
    KDN_RETURN_IF_ERROR(AddNlink(db, ino, 0, NowNs()));  // ctime
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  });
}

Result<std::vector<std::string>> Store::ListXattr(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT name FROM xattrs WHERE ino = ? ORDER BY name"));
  q.BindInt(1, ino);
  std::vector<std::string> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    auto n = q.Blob(0);
    out.emplace_back(reinterpret_cast<const char*>(n.data()), n.size());
  }
  return out;
}

Status Store::RemoveXattr(Ino ino, std::string_view name, std::string_view outbox_note) {
  return impl_->txn.Write(false, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(LoadInode(db, ino).status());
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("DELETE FROM xattrs WHERE ino = ? AND name = ? "
                                            "RETURNING length(name) + length(value)"));
    q.BindInt(1, ino).BindBlob(2, AsBytes(name));
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::NotFound("no attribute " + Quote(name));
    fx.xattr_bytes_delta -= static_cast<int64_t>(q.U64(0));
    q.Reset();
    KDN_RETURN_IF_ERROR(AddNlink(db, ino, 0, NowNs()));
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  });
}

}  // namespace kdn
