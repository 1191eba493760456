// Content lookups by `.kv` prefix hash: LookupPrefix, LookupPrefixInDir.
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

Result<std::vector<PrefixMatch>> Store::LookupPrefix(const Hash128& hash, size_t max_results) {
  impl_->chunks.CountPrefixLookup();
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  std::vector<PrefixMatch> out;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT p.chunk, p.idx, k.n_tokens FROM prefixes p "
                                             "JOIN kv_meta k ON k.chunk = p.chunk "
                                             "WHERE p.hash = ? LIMIT ?"));
    q.BindId(1, hash).BindInt(2, static_cast<int64_t>(max_results));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      out.push_back(PrefixMatch{q.Chunk(0), static_cast<uint32_t>(q.U64(1)),
                                static_cast<uint32_t>(q.U64(2)), 0});
    }
  }
  KDN_ASSIGN_OR_RETURN(Stmt f, db->Prepare("SELECT ino FROM inodes WHERE chunk = ? AND nlink > 0 "
                                           "ORDER BY ino LIMIT 1"));
  for (PrefixMatch& m : out) {
    f.BindId(1, m.chunk);
    KDN_ASSIGN_OR_RETURN(bool row, f.Step());
    if (row) m.ino = f.U64(0);
    f.Reset();
  }
  if (!out.empty()) impl_->chunks.CountPrefixHit();
  return out;
}

Result<std::vector<DirPrefixMatch>> Store::LookupPrefixInDir(Ino dir, const Hash128& hash,
                                                             std::span<const uint32_t> owners,
                                                             size_t max_results) {
  impl_->chunks.CountPrefixLookup();
  std::vector<DirPrefixMatch> out;
  if (owners.empty() || max_results == 0) return out;
  if (owners.size() > kMaxPrefixOwners) {
    return Status::InvalidArgument("more than " + std::to_string(kMaxPrefixOwners) +
                                   " owners for a prefix lookup");
  }
  // One statement text for every call (Db caches statements by their text's address): a fixed
  // number of owner slots, the unused ones repeating the first owner.
  static const std::string sql = [] {
    std::string s =
        "SELECT d.name, d.ino, p.idx FROM prefixes p "
        "JOIN inodes i ON i.chunk = p.chunk JOIN dentries d ON d.ino = i.ino "
        "WHERE p.hash = ? AND d.parent = ? AND i.uid IN (";
    for (size_t k = 0; k < kMaxPrefixOwners; ++k) s += k == 0 ? "?" : ", ?";
    return s + ") ORDER BY d.name LIMIT ?";
  }();
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  std::vector<std::pair<std::string, Ino>> rows;
  std::vector<uint32_t> idx;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare(sql.c_str()));
    q.BindId(1, hash).BindInt(2, static_cast<int64_t>(dir));
    for (size_t k = 0; k < kMaxPrefixOwners; ++k) {
      q.BindInt(static_cast<int>(3 + k), owners[k < owners.size() ? k : 0]);
    }
    q.BindInt(static_cast<int>(3 + kMaxPrefixOwners), static_cast<int64_t>(max_results));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      auto name = q.Blob(0);
      rows.emplace_back(std::string(reinterpret_cast<const char*>(name.data()), name.size()),
                        q.U64(1));
      idx.push_back(static_cast<uint32_t>(q.U64(2)));
    }
  }
  for (size_t k = 0; k < rows.size(); ++k) {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(*db, rows[k].second));
    if (!S_ISREG(a.mode)) continue;
    out.push_back(DirPrefixMatch{std::move(rows[k].first), a, idx[k]});
  }
  if (!out.empty()) impl_->chunks.CountPrefixHit();
  return out;
}

}  // namespace kdn
