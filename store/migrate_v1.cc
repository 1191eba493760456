#include "store/migrate_v1.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "iouring/aligned_buffer.h"
#include "store/chunk_id.h"
#include "store/chunk_layout.h"
#include "store/schema.h"

namespace kdn::store {
namespace {

struct V1Extent {
  int64_t seg, off, len;
};

struct V1Chunk {
  Hash128 old_id;
  uint64_t size = 0;
  uint64_t block_bytes = 0;
  std::vector<uint64_t> sums;
  bool kv = false;
  std::vector<V1Extent> extents;
};

std::string SegPath(const std::string& dir, int64_t seg) {
  char name[32];
  std::snprintf(name, sizeof(name), "/seg/%06lld.seg", static_cast<long long>(seg));
  return dir + name;
}

bool AllZero(const std::byte* p, size_t n) {
  return std::all_of(p, p + n, [](std::byte b) { return b == std::byte{0}; });
}

// Copies one chunk to its file; returns its SHA-256 id.
Result<ChunkId> CopyChunk(const V1Chunk& c, const std::string& dir, ChunkFiles& files,
                          bool sync_full, std::map<int64_t, UniqueFd>& segs) {
  const std::string who = "chunk " + c.old_id.ToHex();
  if (c.block_bytes == 0 || c.sums.size() != (c.size + c.block_bytes - 1) / c.block_bytes) {
    return Status::Corruption(who + ": malformed block checksums");
  }
  std::string temp_path;
  KDN_ASSIGN_OR_RETURN(UniqueFd direct, files.CreateTemp(&temp_path));
  direct.reset();
  // Plain writes here: a one-off copy, sized by the block.
  UniqueFd out = OpenFd(temp_path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  if (!out.valid()) return Status::FromErrno("opening " + temp_path, errno);
  struct Cleanup {
    std::string path;
    ~Cleanup() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  } cleanup{temp_path};

  ChunkHasher hasher;
  std::vector<std::byte> block(c.block_bytes);
  uint64_t chunk_off = 0;
  size_t ext = 0;
  uint64_t in_ext = 0;  // bytes of extents[ext] consumed
  for (uint64_t b = 0; b < c.sums.size(); ++b) {
    const uint64_t n = std::min<uint64_t>(c.block_bytes, c.size - chunk_off);
    for (uint64_t got = 0; got < n;) {
      if (ext >= c.extents.size()) return Status::Corruption(who + ": extents too short");
      const V1Extent& e = c.extents[ext];
      auto it = segs.find(e.seg);
      if (it == segs.end()) {
        UniqueFd fd = OpenFd(SegPath(dir, e.seg).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (!fd.valid()) return Status::FromErrno("opening " + SegPath(dir, e.seg), errno);
        it = segs.emplace(e.seg, std::move(fd)).first;
      }
      const uint64_t take = std::min<uint64_t>(n - got, static_cast<uint64_t>(e.len) - in_ext);
      const ssize_t r = ::pread(it->second.get(), block.data() + got, take,
                                static_cast<off_t>(static_cast<uint64_t>(e.off) + in_ext));
      if (r != static_cast<ssize_t>(take)) {
        return Status::IOError(SegPath(dir, e.seg) + ": short read of " + who);
      }
      got += take;
      in_ext += take;
      if (in_ext == static_cast<uint64_t>(e.len)) {
        ++ext;
        in_ext = 0;
      }
    }
    std::span<const std::byte> bytes(block.data(), n);
    if (BlockSum(bytes) != c.sums[b]) {
      return Status::Corruption(who + " block " + std::to_string(b) + ": checksum mismatch");
    }
    hasher.Update(bytes);
    // Holes for the all-zero 4 KiB pieces of plain content, as new chunks are written.
    for (uint64_t at = 0; at < n; at += io::kDirectAlign) {
      const uint64_t len = std::min<uint64_t>(io::kDirectAlign, n - at);
      if (!c.kv && AllZero(block.data() + at, len)) continue;
      if (::pwrite(out.get(), block.data() + at, len, static_cast<off_t>(chunk_off + at)) !=
          static_cast<ssize_t>(len)) {
        return Status::FromErrno("writing " + temp_path, errno);
      }
    }
    chunk_off += n;
  }
  if (::ftruncate(out.get(), static_cast<off_t>(c.size)) != 0) {
    return Status::FromErrno("setting the size of " + temp_path, errno);
  }
  if (sync_full && ::fdatasync(out.get()) != 0) {
    return Status::FromErrno("syncing " + temp_path, errno);
  }
  ChunkId id = hasher.Finish();
  std::vector<std::string> dirs;
  KDN_RETURN_IF_ERROR(files.Install(temp_path, id, &dirs));
  cleanup.path.clear();
  KDN_RETURN_IF_ERROR(files.SyncDirs(dirs));
  return id;
}

}  // namespace

Status MigrateV1(Db& db, const std::string& dir, ChunkFiles& files, bool sync_full,
                 const std::function<void(uint64_t done, uint64_t total)>& progress) {
  std::vector<V1Chunk> chunks;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT id, size, block_bytes, sums, kv FROM chunks"));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      V1Chunk c;
      if (!FromKey(q.Blob(0), &c.old_id)) return Status::Corruption("v1 chunk with a bad id");
      c.size = q.U64(1);
      c.block_bytes = q.U64(2);
      if (!DecodeSums(q.Blob(3), &c.sums)) return Status::Corruption("v1 chunk: bad sums");
      c.kv = q.Int(4) != 0;
      chunks.push_back(std::move(c));
    }
  }
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT seg, off, len FROM extents WHERE chunk = ? "
                                            "ORDER BY idx"));
    for (V1Chunk& c : chunks) {
      q.BindId(1, c.old_id);
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        c.extents.push_back(V1Extent{q.Int(0), q.Int(1), q.Int(2)});
      }
      q.Reset();
    }
  }
  // 1. Every chunk to its file (nothing of version 1 changes).
  const std::string staging = dir + "/staging";
  if (::mkdir(staging.c_str(), kDirMode) != 0 && errno != EEXIST) {
    return Status::FromErrno("creating " + staging, errno);
  }
  std::vector<ChunkId> new_ids;
  {
    std::map<int64_t, UniqueFd> segs;
    for (const V1Chunk& c : chunks) {
      if (progress) progress(new_ids.size(), chunks.size());
      if (c.size == 0) {
        new_ids.push_back(HashChunk({}));
        continue;
      }
      KDN_ASSIGN_OR_RETURN(ChunkId id, CopyChunk(c, dir, files, sync_full, segs));
      new_ids.push_back(id);
    }
    if (progress) progress(new_ids.size(), chunks.size());
  }
  // 2. One transaction: the new ids everywhere, version 2.
  {
    KDN_ASSIGN_OR_RETURN(WriteTxn txn, WriteTxn::Begin(db));
    static constexpr const char* kRenames[] = {
        "UPDATE chunks SET id = ?1 WHERE id = ?2", "UPDATE inodes SET chunk = ?1 WHERE chunk = ?2",
        "UPDATE kv_meta SET chunk = ?1 WHERE chunk = ?2",
        "UPDATE prefixes SET chunk = ?1 WHERE chunk = ?2"};
    for (const char* sql : kRenames) {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare(sql));
      for (size_t i = 0; i < chunks.size(); ++i) {
        q.BindId(1, new_ids[i]);
        q.BindId(2, chunks[i].old_id);
        KDN_RETURN_IF_ERROR(q.Run());
      }
    }
    KDN_RETURN_IF_ERROR(db.Exec("DROP TABLE extents"));
    KDN_RETURN_IF_ERROR(SetMetaInt(db, "schema_version", kSchemaVersion));
    KDN_RETURN_IF_ERROR(txn.Commit());
  }
  // The switch must be durable before the segments go: the connection runs synchronous=NORMAL
  // (txn.cc), whose COMMIT does not sync the log; a FULL checkpoint syncs it, then
  // copies it into meta.db and syncs that.
  if (sync_full) KDN_RETURN_IF_ERROR(db.Exec("PRAGMA wal_checkpoint(FULL)"));
  // 3. The segments go.
  return RemoveV1Segments(dir);
}

Status RemoveV1Segments(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir + "/seg", ec);
  if (ec) return Status::FromErrno("removing " + dir + "/seg", ec.value());
  return Status::OK();
}

}  // namespace kdn::store
