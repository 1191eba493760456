// File content: SetContent (a prepared chunk becomes an inode's content, in the same
// transaction that publishes it), CommitFileContent and CommitHashedFile.
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

Status Store::Impl::SetContent(Db& db, Ino ino, PreparedChunk& chunk, const CommitOptions& opts,
                               TxnEffects& fx, bool* vanished, InodeAttr* out) {
  KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
  if (S_ISDIR(a.mode)) return Errno(EISDIR, "content for directory " + std::to_string(ino));
  if (!S_ISREG(a.mode)) return Status::InvalidArgument("content for a non-regular file");
  const bool keep = Keeps(a);
  ChunkId id;
  const uint64_t size = chunk.size;
  if (size > 0) {
    KDN_ASSIGN_OR_RETURN(bool ok, chunks.InstallChunk(db, chunk, RefKind::kInode, keep, fx));
    if (!ok) {
      *vanished = true;
      return Status::Internal("chunk vanished during commit");
    }
    id = chunk.id;
  }
  // The new reference first, so that committing the same content again never drops the chunk.
  if (!a.chunk.IsZero()) {
    KDN_RETURN_IF_ERROR(chunks.DropChunkRef(db, a.chunk, RefKind::kInode, keep, fx));
  }
  const int64_t now = NowNs();
  a.chunk = id;
  a.size = size;
  a.mtime_ns = Resolve(opts.mtime_ns, now);
  a.ctime_ns = now;
  KDN_ASSIGN_OR_RETURN(Stmt u, db.Prepare("UPDATE inodes SET chunk = ?, size = ?, mtime = ?, "
                                          "ctime = ? WHERE ino = ?"));
  if (id.IsZero()) {
    u.BindNull(1);
  } else {
    u.BindId(1, id);
  }
  u.BindInt(2, size).BindInt(3, a.mtime_ns).BindInt(4, now).BindInt(5, ino);
  KDN_RETURN_IF_ERROR(u.Run());
  KDN_RETURN_IF_ERROR(AppendOutbox(db, id, opts.outbox_note));
  *out = a;
  return Status::OK();
}

namespace {

// Capacity a commit arrives with (CommitOptions::reserved_bytes): given back unless the prepared
// chunk took it over (std::exchange of `bytes`).
struct HeldSpace {
  Store* store;
  uint64_t bytes;
  ~HeldSpace() { store->ReleaseSpace(bytes); }
};

}  // namespace

Status Store::Impl::CommitPreparedFile(Ino ino, PreparedChunk& chunk, int fd,
                                       const std::string& path, const CommitOptions& options,
                                       InodeAttr* out) {
  store::FileChunkSource source(fd, chunk.size, path);
  KDN_RETURN_IF_ERROR(chunks.StoreAndCommit(
      chunk, source, false, [&](Db& db, TxnEffects& fx, bool* vanished) -> Status {
        if (source.read_any()) KDN_RETURN_IF_ERROR(source.CheckUnchanged(chunk.id));
        return SetContent(db, ino, chunk, options, fx, vanished, out);
      }));
  chunks.CountPut(chunk.size);
  return Status::OK();
}

Result<InodeAttr> Store::CommitFileContent(Ino ino, const std::string& staged_path,
                                           const CommitOptions& options) {
  // The capacity the caller holds goes back unless the prepared chunk takes it over.
  HeldSpace held{this, options.reserved_bytes};
  UniqueFd fd = OpenFd(staged_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!fd.valid()) return Status::FromErrno("opening " + staged_path, errno);
  KDN_ASSIGN_OR_RETURN(
      std::unique_ptr<PreparedChunk> chunk,
      impl_->chunks.PrepareFile(fd.get(), staged_path, std::exchange(held.bytes, 0)));
  InodeAttr out;
  KDN_RETURN_IF_ERROR(
      impl_->CommitPreparedFile(ino, *chunk, fd.get(), staged_path, options, &out));
  ::unlink(staged_path.c_str());
  return out;
}

Result<InodeAttr> Store::CommitHashedFile(Ino ino, const std::string& staged_path,
                                          const ChunkId& id, const CommitOptions& options) {
  HeldSpace held{this, options.reserved_bytes};
  // Only a file of this store's staging directory can become a chunk file by a rename (same
  // filesystem, mode 0600, written by this process alone).
  const std::string staging = staging_dir() + "/";
  if (staged_path.compare(0, staging.size(), staging) != 0 ||
      staged_path.find('/', staging.size()) != std::string::npos ||
      staged_path.size() == staging.size()) {
    return Status::InvalidArgument(staged_path + " is not a file of the store's staging directory");
  }
  UniqueFd fd = OpenFd(staged_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (!fd.valid()) return Status::FromErrno("opening " + staged_path, errno);
  KDN_ASSIGN_OR_RETURN(
      std::unique_ptr<PreparedChunk> chunk,
      impl_->chunks.PrepareHashedFile(fd.get(), staged_path, id, std::exchange(held.bytes, 0)));
  const bool adopted = chunk->written && chunk->size > 0;
  InodeAttr out;
  KDN_RETURN_IF_ERROR(
      impl_->CommitPreparedFile(ino, *chunk, fd.get(), staged_path, options, &out));
  if (!adopted || !chunk->installed) ::unlink(staged_path.c_str());  // not renamed into place
  return out;
}

Result<InodeAttr> Store::CommitFileContent(Ino ino, std::span<const std::byte> content,
                                           const CommitOptions& options) {
  HeldSpace held{this, options.reserved_bytes};
  store::MemoryChunkSource source(content);
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<PreparedChunk> chunk,
                       impl_->chunks.PrepareMemory(content, source));
  chunk->reserved += std::exchange(held.bytes, 0);
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->chunks.StoreAndCommit(
      *chunk, source, false, [&](Db& db, TxnEffects& fx, bool* vanished) -> Status {
        return impl_->SetContent(db, ino, *chunk, options, fx, vanished, &out);
      }));
  impl_->chunks.CountPut(chunk->size);
  return out;
}

}  // namespace kdn
