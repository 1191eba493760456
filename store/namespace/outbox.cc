// The outbox: notes written in the transaction of a change, read and removed by the origin tier.
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

Status Store::Impl::AppendOutbox(Db& db, const ChunkId& chunk, std::string_view note) {
  if (note.empty()) return Status::OK();
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT INTO outbox(chunk, body) VALUES(?, ?)"));
  if (chunk.IsZero()) {
    q.BindNull(1);
  } else {
    q.BindId(1, chunk);
  }
  q.BindBlob(2, AsBytes(note));
  return q.Run();
}

Result<std::vector<OutboxNote>> Store::ReadOutbox(uint64_t after_seq, size_t max_notes) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT seq, chunk, body FROM outbox WHERE seq > ? "
                                           "ORDER BY seq LIMIT ?"));
  q.BindInt(1, static_cast<int64_t>(after_seq)).BindInt(2, static_cast<int64_t>(max_notes));
  std::vector<OutboxNote> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    std::span<const std::byte> body = q.Blob(2);
    out.push_back(OutboxNote{q.U64(0), q.Chunk(1),
                             std::string(reinterpret_cast<const char*>(body.data()), body.size())});
  }
  return out;
}

Status Store::RemoveOutboxNote(uint64_t seq) {
  return impl_->txn.Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("DELETE FROM outbox WHERE seq = ?"));
    q.BindInt(1, static_cast<int64_t>(seq));
    return q.Run();
  });
}

Result<Store::OutboxState> Store::GetOutboxState() {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT count(*), ifnull(min(seq), 0), "
                                           "ifnull(max(seq), 0) FROM outbox"));
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  OutboxState state;
  if (row) state = OutboxState{q.U64(0), q.U64(1), q.U64(2)};
  return state;
}

Result<bool> Store::OutboxNamesChunk(const ChunkId& chunk) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT 1 FROM outbox WHERE chunk = ? LIMIT 1"));
  q.BindId(1, chunk);
  return q.Step();
}

}  // namespace kdn
