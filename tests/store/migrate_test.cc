// Migration of a version 1 store (segment files, XXH3-128 ids) in place: every file reads back
// byte for byte, ids become SHA-256, fsck is clean, the segments are gone; an interrupted
// migration resumes. The version 1 store is written here, by a minimal v1 writer kept in the test
// (the library no longer writes segments).
#define XXH_INLINE_ALL
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <xxhash.h>

#include <filesystem>
#include <map>

#include "sha256_util.h"
#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

// The version 1 schema, as store/schema.cc had it.
constexpr const char* kV1Schema = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE chunks(
  id BLOB PRIMARY KEY,
  size INTEGER NOT NULL,
  stored INTEGER NOT NULL,
  block_bytes INTEGER NOT NULL,
  sums BLOB NOT NULL,
  put_refs INTEGER NOT NULL,
  put_keep INTEGER NOT NULL,
  inode_refs INTEGER NOT NULL,
  inode_keep INTEGER NOT NULL,
  pins INTEGER NOT NULL,
  atime INTEGER NOT NULL,
  ctime INTEGER NOT NULL,
  kv INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX chunks_lru ON chunks(atime) WHERE put_keep = 0 AND inode_keep = 0 AND pins = 0;
CREATE TABLE extents(
  chunk BLOB NOT NULL,
  idx INTEGER NOT NULL,
  seg INTEGER NOT NULL,
  off INTEGER NOT NULL,
  len INTEGER NOT NULL,
  PRIMARY KEY(chunk, idx)
) WITHOUT ROWID;
CREATE TABLE kv_meta(
  chunk BLOB PRIMARY KEY,
  model TEXT NOT NULL,
  fingerprint BLOB NOT NULL,
  n_layers INTEGER NOT NULL,
  n_tokens INTEGER NOT NULL,
  position_offset INTEGER NOT NULL,
  chunk_tokens INTEGER NOT NULL,
  codec TEXT NOT NULL,
  raw_bytes INTEGER NOT NULL,
  file_bytes INTEGER NOT NULL,
  n_prefix INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE prefixes(
  hash BLOB NOT NULL,
  chunk BLOB NOT NULL,
  idx INTEGER NOT NULL,
  PRIMARY KEY(hash, chunk)
) WITHOUT ROWID;
CREATE INDEX prefixes_chunk ON prefixes(chunk);
CREATE TABLE inodes(
  ino INTEGER PRIMARY KEY AUTOINCREMENT,
  mode INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  gid INTEGER NOT NULL,
  nlink INTEGER NOT NULL,
  size INTEGER NOT NULL,
  atime INTEGER NOT NULL,
  mtime INTEGER NOT NULL,
  ctime INTEGER NOT NULL,
  rdev INTEGER NOT NULL,
  chunk BLOB,
  target BLOB,
  parent INTEGER,
  evictable INTEGER NOT NULL,
  pinned INTEGER NOT NULL
);
CREATE INDEX inodes_chunk ON inodes(chunk) WHERE chunk IS NOT NULL;
CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;
CREATE TABLE dentries(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  parent INTEGER NOT NULL,
  name BLOB NOT NULL,
  ino INTEGER NOT NULL
);
CREATE UNIQUE INDEX dentries_name ON dentries(parent, name);
CREATE INDEX dentries_list ON dentries(parent, id);
CREATE INDEX dentries_ino ON dentries(ino);
CREATE TABLE xattrs(
  ino INTEGER NOT NULL,
  name BLOB NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY(ino, name)
) WITHOUT ROWID;
)sql";


constexpr uint64_t kV1Block = 128 * 1024;
constexpr uint64_t kSegBytes = 1 << 20;  // small segments: chunks span two

std::vector<std::byte> Key16(std::span<const std::byte> bytes) {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  std::vector<std::byte> key(16);
  for (int i = 0; i < 8; ++i) {
    key[i] = static_cast<std::byte>(h.high64 >> (56 - 8 * i));
    key[8 + i] = static_cast<std::byte>(h.low64 >> (56 - 8 * i));
  }
  return key;
}

std::vector<std::byte> Sums(std::span<const std::byte> bytes) {
  std::vector<std::byte> out;
  for (uint64_t at = 0; at < bytes.size(); at += kV1Block) {
    uint64_t s = XXH3_64bits(bytes.data() + at, std::min<uint64_t>(kV1Block, bytes.size() - at));
    for (int b = 0; b < 8; ++b) out.push_back(static_cast<std::byte>(s >> (8 * b)));
  }
  return out;
}

// A minimal version 1 store writer: chunks appended to segment files, rows for them.
class V1Writer {
 public:
  explicit V1Writer(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directories(dir + "/seg");
    EXPECT_EQ(sqlite3_open((dir + "/meta.db").c_str(), &db_), SQLITE_OK);
    Exec(kV1Schema);
    Exec("INSERT INTO meta VALUES('schema_version', 1)");
    Exec("INSERT INTO meta VALUES('created_ns', 1)");
    Exec("INSERT INTO inodes(ino, mode, uid, gid, nlink, size, atime, mtime, ctime, rdev, parent, "
         "evictable, pinned) VALUES(1, " + std::to_string(S_IFDIR | 0755) +
         ", 0, 0, 2, 0, 1, 1, 1, 0, 1, 0, 0)");
  }
  ~V1Writer() { sqlite3_close(db_); }

  void Exec(const std::string& sql) {
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << (err ? err : "") << "\n" << sql;
    sqlite3_free(err);
  }

  // Stores a chunk (once) and returns its key.
  std::vector<std::byte> Chunk(std::span<const std::byte> bytes, int put_refs, int inode_refs) {
    auto key = Key16(bytes);
    sqlite3_stmt* q;
    EXPECT_EQ(sqlite3_prepare_v2(db_, "INSERT INTO chunks VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1, "
                                      "1, 0)", -1, &q, nullptr), SQLITE_OK);
    auto sums = Sums(bytes);
    sqlite3_bind_blob(q, 1, key.data(), 16, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, bytes.size());
    sqlite3_bind_int64(q, 3, (bytes.size() + 4095) / 4096 * 4096);
    sqlite3_bind_int64(q, 4, kV1Block);
    sqlite3_bind_blob(q, 5, sums.data(), sums.size(), SQLITE_TRANSIENT);
    sqlite3_bind_int(q, 6, put_refs);
    sqlite3_bind_int(q, 7, put_refs);
    sqlite3_bind_int(q, 8, inode_refs);
    sqlite3_bind_int(q, 9, inode_refs);
    EXPECT_EQ(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    // Extents: appended to the current segment, spilling into the next.
    uint64_t done = 0;
    int idx = 0;
    while (done < bytes.size()) {
      if (seg_used_ >= kSegBytes) {
        ++seg_;
        seg_used_ = 0;
      }
      uint64_t n = std::min<uint64_t>(bytes.size() - done, kSegBytes - seg_used_);
      char name[32];
      std::snprintf(name, sizeof(name), "/seg/%06d.seg", seg_);
      FILE* f = std::fopen((dir_ + name).c_str(), std::filesystem::exists(dir_ + name) ? "r+b" : "w+b");
      std::fseek(f, static_cast<long>(seg_used_), SEEK_SET);
      std::fwrite(bytes.data() + done, 1, n, f);
      std::fclose(f);
      std::filesystem::resize_file(dir_ + name, kSegBytes);
      Exec("INSERT INTO extents VALUES(x'" + Hex(key) + "', " + std::to_string(idx++) + ", " +
           std::to_string(seg_) + ", " + std::to_string(seg_used_) + ", " + std::to_string(n) +
           ")");
      seg_used_ += (n + 4095) / 4096 * 4096;
      done += n;
    }
    return key;
  }

  // A regular file in the root holding `key` (nullopt: empty).
  void File(const std::string& name, const std::vector<std::byte>& key, uint64_t size) {
    Exec("INSERT INTO inodes(mode, uid, gid, nlink, size, atime, mtime, ctime, rdev, chunk, "
         "parent, evictable, pinned) VALUES(" + std::to_string(S_IFREG | 0644) + ", 0, 0, 1, " +
         std::to_string(size) + ", 1, 1, 1, 0, x'" + Hex(key) + "', NULL, 0, 0)");
    Exec("INSERT INTO dentries(parent, name, ino) VALUES(1, CAST('" + name +
         "' AS BLOB), last_insert_rowid())");
  }

  static std::string Hex(const std::vector<std::byte>& key) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s;
    for (std::byte b : key) {
      s += kDigits[static_cast<uint8_t>(b) >> 4];
      s += kDigits[static_cast<uint8_t>(b) & 15];
    }
    return s;
  }

 private:
  std::string dir_;
  sqlite3* db_ = nullptr;
  int seg_ = 1;
  uint64_t seg_used_ = 0;
};

struct V1Content {
  std::map<std::string, std::vector<std::byte>> files;
  std::vector<std::byte> put_only;
};

V1Content WriteV1Store(const std::string& dir) {
  V1Content c;
  c.files["a.bin"] = RandomBytes(300001, 1);
  c.files["big.bin"] = RandomBytes(1500000, 2);  // spans two segments
  c.files["small.txt"] = RandomBytes(5, 3);
  std::vector<std::byte> sparse(700000);
  auto d = RandomBytes(5000, 4);
  std::copy(d.begin(), d.end(), sparse.begin() + 200000);
  c.files["sparse.bin"] = sparse;
  c.files["same-as-a.bin"] = c.files["a.bin"];  // deduplicated: one chunk, two files
  c.put_only = RandomBytes(9000, 5);
  V1Writer w(dir);
  w.Exec("BEGIN");
  std::map<std::vector<std::byte>, std::vector<std::byte>> keys;  // content -> key
  std::map<std::vector<std::byte>, int> refs;
  for (const auto& [name, bytes] : c.files) ++refs[bytes];
  for (const auto& [bytes, n] : refs) keys[bytes] = w.Chunk(bytes, 0, n);
  for (const auto& [name, bytes] : c.files) w.File(name, keys[bytes], bytes.size());
  w.Chunk(c.put_only, 1, 0);
  w.Exec("COMMIT");
  return c;
}

void ExpectMigrated(Store& store, const V1Content& c) {
  EXPECT_FALSE(std::filesystem::exists(store.dir() + "/seg")) << "the segments are removed";
  for (const auto& [name, bytes] : c.files) {
    auto attr = store.Lookup(kRootIno, name);
    ASSERT_TRUE(attr.ok()) << name << ": " << attr.status().ToString();
    EXPECT_EQ(attr->chunk.ToHex(), test::Sha256Hex(bytes)) << name;
    EXPECT_EQ(test::ReadWhole(store, attr->chunk, bytes.size()), bytes) << name;
  }
  auto put = ChunkId::FromHex(test::Sha256Hex(c.put_only));
  ASSERT_TRUE(put.ok());
  auto info = store.StatChunk(*put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->refs, 1u);
  EXPECT_EQ(test::ReadWhole(store, *put, c.put_only.size()), c.put_only);
  EXPECT_EQ(store.Usage().chunks, 5u);
  test::ExpectClean(store);
}

TEST(MigrateV1, EveryFileReadsBackAfterMigration) {
  test::TempDir tmp("kdn-store");
  const std::string dir = tmp / "store";
  V1Content c = WriteV1Store(dir);
  auto store = test::OpenStore(dir, test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  std::string all;
  for (const std::string& w : store->OpenWarnings()) all += w + "\n";
  EXPECT_NE(all.find("migrated from version 1"), std::string::npos) << all;
  ExpectMigrated(*store, c);
  store.reset();
  // And again after a reopen, now as a version 2 store.
  store = test::OpenStore(dir, test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->OpenWarnings().empty());
  ExpectMigrated(*store, c);
}

TEST(MigrateV1, AnInterruptedMigrationResumes) {
  test::TempDir tmp("kdn-store");
  const std::string dir = tmp / "store";
  V1Content c = WriteV1Store(dir);
  // What a crash during the copies leaves: some chunk files in place (a whole one, since each
  // is renamed only once synced), a half-written temporary file, and the version 1 database.
  const std::string hex = test::Sha256Hex(c.files["a.bin"]);
  std::filesystem::create_directories(dir + "/chunks/" + hex.substr(0, 2));
  std::filesystem::create_directories(dir + "/staging");
  test::WriteFile(dir + "/chunks/" + hex.substr(0, 2) + "/" + hex, c.files["a.bin"]);
  test::WriteFile(dir + "/staging/chunk-00000000deadbeef.tmp", RandomBytes(1000, 9));
  {
    auto store = test::OpenStore(dir, test::SmallStoreOptions());
    ASSERT_NE(store, nullptr);
    ExpectMigrated(*store, c);
  }
  // A crash after the commit, before the segments went: removed at the next open.
  std::filesystem::create_directories(dir + "/seg");
  test::WriteFile(dir + "/seg/000001.seg", RandomBytes(4096, 1));
  auto store = test::OpenStore(dir, test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  ExpectMigrated(*store, c);
}

// kdnctl migrate draws this on a terminal: every chunk copied, ending at all of them.
TEST(MigrateV1, ProgressHearsOfEveryChunkCopied) {
  test::TempDir tmp("kdn-store");
  const std::string dir = tmp / "store";
  WriteV1Store(dir);
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  StoreOptions options = test::SmallStoreOptions();
  options.migrate_progress = [&calls](uint64_t done, uint64_t total) {
    calls.emplace_back(done, total);
  };
  auto store = test::OpenStore(dir, options);
  ASSERT_NE(store, nullptr);
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.front().first, 0u);
  EXPECT_EQ(calls.back(), std::make_pair(uint64_t{5}, uint64_t{5}));  // five distinct chunks
  for (size_t i = 1; i < calls.size(); ++i) {
    EXPECT_GE(calls[i].first, calls[i - 1].first);
    EXPECT_EQ(calls[i].second, 5u);
  }
}

std::string RunCommand(const std::string& command, int* status) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int raw = ::pclose(p);
  *status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128;
  return out;
}

TEST(MigrateV1, KdnctlMigrateShowsProgressOnATerminalOnly) {
  test::TempDir tmp("kdn-store");
  const std::string quiet = tmp / "quiet", shown = tmp / "shown";
  WriteV1Store(quiet);
  WriteV1Store(shown);
  int status = -1;
  // stderr to a pipe: the result line only, and no progress bytes.
  std::string out = RunCommand(std::string(KDNCTL_PATH) + " migrate " + quiet + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos) << out;
  EXPECT_EQ(out.find("copying"), std::string::npos) << out;
  KDN_REQUIRE_OR_SKIP(RunCommand("command -v script", &status).size() > 0 && status == 0,
                      "script(1) is not installed (apt: util-linux)");
  out = RunCommand("script -qec '" + std::string(KDNCTL_PATH) + " migrate " + shown + "' /dev/null",
                   &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\rkdnctl migrate: " + shown + ": copying chunks 5/5 (100%)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find(shown + ": current"), std::string::npos) << out;
}

}  // namespace
}  // namespace kdn
