// fsck: every invariant the store relies on, checked against the database, the chunk files (one
// per chunk, its size, no strays) and (optionally) the bytes themselves.
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "iouring/aligned_buffer.h"
#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::Stmt;

namespace {

constexpr size_t kMaxProblems = 1000;

class Problems {
 public:
  explicit Problems(std::vector<std::string>* out) : out_(out) {}
  ~Problems() {
    if (dropped_ > 0) out_->push_back("... and " + std::to_string(dropped_) + " more problems");
  }
  void Add(std::string p) {
    if (out_->size() < kMaxProblems) {
      out_->push_back(std::move(p));
    } else {
      ++dropped_;
    }
  }

 private:
  std::vector<std::string>* out_;
  uint64_t dropped_ = 0;
};

struct ChunkRow {
  ChunkId id;
  int64_t size, stored, block_bytes, put_refs, put_keep, inode_refs, inode_keep, pins, kv;
  size_t sums_bytes;
};

std::string Chunk(const ChunkId& id) {
  return "chunk " + id.ToHex();
}
std::string Inode(Ino ino) {
  return "inode " + std::to_string(ino);
}

}  // namespace

Result<FsckReport> Store::Fsck(const std::string& dir, const FsckOptions& options) {
  StoreOptions o;
  o.create_if_missing = false;
  o.info_log = options.info_log;
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(dir, o));
  KDN_ASSIGN_OR_RETURN(FsckReport report, store->Fsck(options));
  report.fixed = store->OpenWarnings();
  return report;
}

Result<FsckReport> Store::Fsck(const FsckOptions& options) {
  FsckReport report;
  std::vector<ChunkId> to_verify;
  // What is committed becomes durable first: the files of chunks whose deletion was waiting for
  // that go now, rather than showing up as strays.
  if (Status s = impl_->txn.SyncAll(); !s.ok()) return s;
  {
    Problems problems(&report.problems);
    for (const std::string& p : impl_->open_problems) problems.Add(p);
    // Writers wait while the metadata is checked: the snapshot and the free-space map then agree.
    std::lock_guard wlock(impl_->txn.mu());
    Db& db = impl_->txn.writer();
    KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(db));

    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("PRAGMA quick_check"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        std::string line = q.Text(0);
        if (line != "ok") problems.Add("database: " + line);
      }
    }

    // Chunk files: no file without a committed row (files are installed and removed under
    // the writer's lock, which we hold, so none is in between).
    std::unordered_set<std::string> rows;
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT id FROM chunks"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        rows.insert(q.Chunk(0).ToHex());
      }
    }
    KDN_RETURN_IF_ERROR(impl_->chunks.files().List(
        [&](const std::optional<ChunkId>& id, const std::string& path) -> Status {
          if (!id) {
            problems.Add(path + ": not a chunk file");
          } else if (rows.count(id->ToHex()) == 0) {
            problems.Add(path + ": chunk file of no stored chunk");
          }
          return Status::OK();
        }));

    // References held by inodes, counted from the inodes themselves.
    std::unordered_map<ChunkId, std::pair<int64_t, int64_t>, store::IdHasher> inode_refs;
    {
      KDN_ASSIGN_OR_RETURN(Stmt q,
                           db.Prepare("SELECT chunk, count(*), sum(evictable = 0 OR pinned != 0) "
                                      "FROM inodes WHERE chunk IS NOT NULL GROUP BY chunk"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        inode_refs[q.Chunk(0)] = {q.Int(1), q.Int(2)};
      }
    }
    std::unordered_map<ChunkId, int64_t, store::IdHasher> kv_prefixes;  // n_prefix of kv_meta
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT chunk, n_prefix FROM kv_meta"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        kv_prefixes[q.Chunk(0)] = q.Int(1);
      }
    }
    std::unordered_map<ChunkId, int64_t, store::IdHasher> prefix_rows;
    {
      KDN_ASSIGN_OR_RETURN(Stmt q,
                           db.Prepare("SELECT chunk, count(*) FROM prefixes GROUP BY chunk"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        prefix_rows[q.Chunk(0)] = q.Int(1);
      }
    }

    std::unordered_map<ChunkId, int64_t, store::IdHasher> chunk_sizes;
    {
      KDN_ASSIGN_OR_RETURN(
          Stmt q, db.Prepare("SELECT id, size, stored, block_bytes, length(sums), put_refs, "
                             "put_keep, inode_refs, inode_keep, pins, kv FROM chunks"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        ChunkRow c{q.Chunk(0),
                   q.Int(1),
                   q.Int(2),
                   q.Int(3),
                   q.Int(5),
                   q.Int(6),
                   q.Int(7),
                   q.Int(8),
                   q.Int(9),
                   q.Int(10),
                   static_cast<size_t>(q.Int(4))};
        ++report.chunks;
        chunk_sizes[c.id] = c.size;
        const std::string who = Chunk(c.id);
        if (c.size < 0 || c.stored != static_cast<int64_t>(io::AlignUp(c.size, io::kDirectAlign))) {
          problems.Add(who + ": size " + std::to_string(c.size) + " but " +
                       std::to_string(c.stored) + " bytes stored");
        }
        if (c.block_bytes <= 0 || c.block_bytes % io::kDirectAlign != 0 ||
            c.sums_bytes !=
                8 * static_cast<size_t>((c.size + std::max<int64_t>(c.block_bytes, 1) - 1) /
                                        std::max<int64_t>(c.block_bytes, 1))) {
          problems.Add(who + ": block checksums do not match its size");
        }
        if (c.size > 0) {
          const std::string path = impl_->chunks.files().PathOf(c.id);
          struct stat st;
          if (::lstat(path.c_str(), &st) != 0) {
            problems.Add(who + ": chunk file " + path + " is missing");
          } else if (!S_ISREG(st.st_mode)) {
            problems.Add(who + ": " + path + " is not a regular file");
          } else if (st.st_size != c.size) {
            problems.Add(who + ": chunk file holds " + std::to_string(st.st_size) + " of " +
                         std::to_string(c.size) + " bytes");
          }
        }
        auto ir = inode_refs.find(c.id);
        const int64_t want_refs = ir == inode_refs.end() ? 0 : ir->second.first;
        const int64_t want_keep = ir == inode_refs.end() ? 0 : ir->second.second;
        if (c.inode_refs != want_refs || c.inode_keep != want_keep) {
          problems.Add(who + ": records " + std::to_string(c.inode_refs) + " file references (" +
                       std::to_string(c.inode_keep) + " kept), files hold " +
                       std::to_string(want_refs) + " (" + std::to_string(want_keep) + " kept)");
        }
        if (ir != inode_refs.end()) inode_refs.erase(ir);
        if (c.put_refs < 0 || c.put_keep < 0 || c.put_keep > c.put_refs || c.pins < 0) {
          problems.Add(who + ": malformed reference counts");
        }
        if (c.put_refs + c.inode_refs <= 0) problems.Add(who + ": no reference holds it");
        auto kp = kv_prefixes.find(c.id);
        if ((c.kv != 0) != (kp != kv_prefixes.end())) {
          problems.Add(who + ": .kv flag and .kv metadata disagree");
        }
        if (kp != kv_prefixes.end()) {
          auto pr = prefix_rows.find(c.id);
          int64_t have = pr == prefix_rows.end() ? 0 : pr->second;
          if (have > kp->second) problems.Add(who + ": more prefix hashes than its header has");
          if (pr != prefix_rows.end()) prefix_rows.erase(pr);
          kv_prefixes.erase(kp);
        }
        if (options.verify_data) to_verify.push_back(c.id);
      }
    }
    for (const auto& [id, refs] : inode_refs) {
      problems.Add(Chunk(id) + ": content of " + std::to_string(refs.first) +
                   " files but not in the store");
    }
    for (const auto& [id, n] : kv_prefixes)
      problems.Add(Chunk(id) + ": .kv metadata without chunk");
    for (const auto& [id, n] : prefix_rows)
      problems.Add(Chunk(id) + ": prefix hashes without chunk");

    // The namespace.
    std::unordered_map<Ino, std::vector<Ino>> names;  // ino -> parents of its names
    std::unordered_map<Ino, int64_t> subdirs;
    std::unordered_map<Ino, uint32_t> modes;
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT ino, mode FROM inodes"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        modes[q.U64(0)] = static_cast<uint32_t>(q.U64(1));
      }
    }
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT parent, name, ino FROM dentries"));
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        ++report.dentries;
        const Ino parent = q.U64(0), ino = q.U64(2);
        const std::string name = q.Text(1);
        auto pm = modes.find(parent);
        if (pm == modes.end() || !S_ISDIR(pm->second)) {
          problems.Add("entry '" + name + "' of " + Inode(parent) + ": parent is not a directory");
        }
        auto m = modes.find(ino);
        if (m == modes.end()) {
          problems.Add("entry '" + name + "' names missing " + Inode(ino));
          continue;
        }
        names[ino].push_back(parent);
        if (S_ISDIR(m->second)) ++subdirs[parent];
      }
    }
    {
      KDN_ASSIGN_OR_RETURN(
          Stmt q, db.Prepare("SELECT ino, mode, nlink, size, chunk, length(target), parent "
                             "FROM inodes"));
      std::lock_guard olock(impl_->opens.mu());
      while (true) {
        KDN_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        ++report.inodes;
        const Ino ino = q.U64(0);
        const uint32_t mode = static_cast<uint32_t>(q.U64(1));
        const int64_t nlink = q.Int(2), size = q.Int(3);
        const std::string who = Inode(ino);
        auto nm = names.find(ino);
        const int64_t n_names = nm == names.end() ? 0 : static_cast<int64_t>(nm->second.size());
        const bool open = impl_->opens.IsOpen(ino);
        switch (mode & S_IFMT) {
          case S_IFDIR: {
            const int64_t want = nlink == 0 ? 0 : 2 + subdirs[ino];
            if (ino == kRootIno ? n_names != 0 : (n_names != (nlink == 0 ? 0 : 1))) {
              problems.Add(who + ": directory with " + std::to_string(n_names) + " names");
            }
            if (nlink != want) {
              problems.Add(who + ": directory nlink " + std::to_string(nlink) + ", expected " +
                           std::to_string(want));
            }
            if (ino != kRootIno && n_names == 1 &&
                (q.IsNull(6) || q.U64(6) != nm->second.front())) {
              problems.Add(who + ": recorded parent differs from its entry's directory");
            }
            break;
          }
          case S_IFREG: {
            if (q.IsNull(4) ? size != 0 : false) problems.Add(who + ": size without content");
            if (!q.IsNull(4)) {
              auto cs = chunk_sizes.find(q.Chunk(4));
              if (cs == chunk_sizes.end()) {
                problems.Add(who + ": content " + Chunk(q.Chunk(4)) + " is not in the store");
              } else if (cs->second != size) {
                problems.Add(who + ": size " + std::to_string(size) + " but content has " +
                             std::to_string(cs->second) + " bytes");
              }
            }
            [[fallthrough]];
          }
          case S_IFLNK:
          case S_IFCHR:
          case S_IFBLK:
          case S_IFIFO:
          case S_IFSOCK:
            if (nlink != n_names) {
              problems.Add(who + ": nlink " + std::to_string(nlink) + " but " +
                           std::to_string(n_names) + " names");
            }
            if (S_ISLNK(mode) && (q.IsNull(5) || q.Int(5) <= 0 || q.Int(5) != size)) {
              problems.Add(who + ": symlink without a proper target");
            }
            break;
          default:
            problems.Add(who + ": unknown file type " + std::to_string(mode));
        }
        if (nlink == 0 && !open) problems.Add(who + ": unlinked but not reclaimed");
      }
    }
  }

  // The bytes, without blocking writers: a chunk deleted meanwhile is simply gone.
  for (size_t i = 0; i < to_verify.size(); ++i) {
    if (options.progress) options.progress(i, to_verify.size());
    const ChunkId& id = to_verify[i];
    Status s = VerifyChunk(id);
    if (s.ok()) {
      Result<ChunkInfo> info = StatChunk(id);
      if (info.ok()) report.bytes_verified += info->size;
      continue;
    }
    if (s.IsNotFound()) continue;
    if (report.problems.size() < kMaxProblems) report.problems.push_back(s.ToString());
  }
  if (options.progress) options.progress(to_verify.size(), to_verify.size());
  return report;
}

}  // namespace kdn
