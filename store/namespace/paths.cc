// Paths of an inode: PathOf, PathsOf (walking up through the directory entries), ParentsOf.
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

Result<std::string> Store::PathOf(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  std::string path;
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT parent, name FROM dentries WHERE ino = ? "
                                           "ORDER BY id LIMIT 1"));
  for (int depth = 0; ino != kRootIno; ++depth) {
    if (depth > 65536) return Status::Corruption("directory parents form a loop");
    q.BindInt(1, ino);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::NotFound("inode " + std::to_string(ino) + " has no name");
    auto name = q.Blob(1);
    path = "/" + std::string(reinterpret_cast<const char*>(name.data()), name.size()) + path;
    ino = q.U64(0);
    q.Reset();
  }
  return path.empty() ? std::string("/") : path;
}

Result<std::vector<std::string>> Store::PathsOf(Ino ino, size_t max_paths) {
  std::vector<std::pair<Ino, std::string>> names;
  {
    KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT parent, name FROM dentries WHERE ino = ? "
                                             "ORDER BY id LIMIT ?"));
    q.BindInt(1, ino).BindInt(2, static_cast<int64_t>(max_paths));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      auto name = q.Blob(1);
      names.emplace_back(q.U64(0),
                         std::string(reinterpret_cast<const char*>(name.data()), name.size()));
    }
  }
  std::vector<std::string> out;
  for (const auto& [parent, name] : names) {
    // A name whose directory went meanwhile is no path any more.
    Result<std::string> dir = PathOf(parent);
    if (!dir.ok()) {
      if (dir.status().IsNotFound()) continue;
      return dir.status();
    }
    out.push_back((*dir == "/" ? std::string() : *dir) + "/" + name);
  }
  return out;
}

Result<std::vector<Ino>> Store::ParentsOf(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT DISTINCT parent FROM dentries WHERE ino = ?"));
  q.BindInt(1, ino);
  std::vector<Ino> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(q.U64(0));
  }
  return out;
}

}  // namespace kdn
