// Eviction's namespace part: the files whose content an evicted chunk is lose every name, then
// their inodes (which releases the chunk). The chunk store picks the chunks (chunk_store.cc,
// store::ChunkStore::Evict) and calls this in the same transaction, through the ReleaseNames
// made here and handed to it at open (the chunk store knows no names).
#include <string>
#include <vector>

#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::Stmt;
using store::TxnEffects;

store::ReleaseNames Store::Impl::ReleaseNamesForChunks() {
  return [this](Db& db, const ChunkId& id, int64_t now, TxnEffects& fx) {
    return RemoveFilesWithContent(db, id, now, fx);
  };
}

Result<bool> Store::Impl::RemoveFilesWithContent(Db& db, const ChunkId& id, int64_t now,
                                                 TxnEffects& fx) {
  std::vector<Ino> inodes;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT ino FROM inodes WHERE chunk = ?"));
    q.BindId(1, id);
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      inodes.push_back(q.U64(0));
    }
  }
  bool busy = false;
  for (Ino ino : inodes) busy = busy || opens.IsOpen(ino);
  if (busy) return false;  // an open file keeps its content
  for (Ino ino : inodes) {
    // Every name of the file goes, then the file, which releases the chunk.
    {
      KDN_ASSIGN_OR_RETURN(Stmt q,
                           db.Prepare("SELECT parent, name FROM dentries WHERE ino = ?"));
      q.BindInt(1, ino);
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        auto name = q.Blob(1);
        fx.evicted.push_back(EvictedName{
            q.U64(0), std::string(reinterpret_cast<const char*>(name.data()), name.size()),
            ino});
      }
    }
    for (const EvictedName& n : fx.evicted) {
      if (n.ino != ino) continue;
      KDN_ASSIGN_OR_RETURN(Stmt t, db.Prepare("UPDATE inodes SET mtime = ?, ctime = ? "
                                              "WHERE ino = ?"));
      t.BindInt(1, now).BindInt(2, now).BindInt(3, n.parent);
      KDN_RETURN_IF_ERROR(t.Run());
    }
    KDN_ASSIGN_OR_RETURN(Stmt del, db.Prepare("DELETE FROM dentries WHERE ino = ?"));
    del.BindInt(1, ino);
    KDN_RETURN_IF_ERROR(del.Run());
    KDN_RETURN_IF_ERROR(DropInode(db, ino, fx));
  }
  return true;
}

}  // namespace kdn
