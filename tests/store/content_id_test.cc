// Content ids no one can forge: two different contents with the same XXH3-128 (and the same
// per-block xxh3-64 checksums) are two chunks, each read back as its own bytes.
//
// The pair is built here, the way an attacker would: XXH3's long-input loop adds each 8-byte
// input word to the neighbouring accumulator lane and adds (lo32 * hi32) of (word ^ secret) to
// its own lane. A word whose low 32 bits equal the secret's makes that product 0 whatever its high
// bits, so raising the high bits of lane 0 in stripe 0 by D and lowering them in stripe 1 (same
// block, no scramble in between) by D leaves every accumulator, and so every XXH3 hash of the
// content, unchanged. The test checks the collision with libxxhash before relying on it.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstring>

#include "sha256_util.h"
#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

uint64_t Word(const std::vector<std::byte>& v, size_t at) {
  uint64_t w;
  std::memcpy(&w, v.data() + at, 8);
  return w;
}
void SetWord(std::vector<std::byte>& v, size_t at, uint64_t w) {
  std::memcpy(v.data() + at, &w, 8);
}

// X and Y != X with equal XXH3-128 and XXH3-64 (1024 bytes: the long-input path, one block).
std::pair<std::vector<std::byte>, std::vector<std::byte>> XxhCollision() {
  auto x = RandomBytes(1024, 77);
  uint64_t s0, s1;  // the default secret's words for stripe 0 lane 0 and stripe 1 lane 0
  std::memcpy(&s0, XXH3_kSecret + 0, 8);
  std::memcpy(&s1, XXH3_kSecret + 8, 8);
  const uint64_t lo = 0xffffffffu;
  SetWord(x, 0, (Word(x, 0) & ~lo) | (s0 & lo));
  SetWord(x, 64, (Word(x, 64) & ~lo) | (s1 & lo));
  auto y = x;
  const uint64_t d = uint64_t{0x1234567} << 32;
  SetWord(y, 0, Word(x, 0) + d);
  SetWord(y, 64, Word(x, 64) - d);
  return {x, y};
}

TEST(ContentId, IsSha256OfTheBytes) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  for (size_t size : {size_t{0}, size_t{1}, size_t{1000}, size_t{300000}}) {
    auto bytes = RandomBytes(size, size + 1);
    auto id = store->Put(bytes);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    EXPECT_EQ(id->ToHex(), test::Sha256Hex(bytes)) << size;
    auto parsed = ChunkId::FromHex(id->ToHex());
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, *id);
  }
  EXPECT_FALSE(ChunkId::FromHex("00").ok());
  EXPECT_FALSE(ChunkId::FromHex(std::string(64, 'g')).ok());
}

// A staged file is written to its chunk file while it is hashed: the id is still the SHA-256 of
// its bytes, and the same bytes committed again (the new copy thrown away) are the same chunk,
// with nothing left behind.
TEST(ContentId, CommittedFilesAreSha256OfTheirBytesAndShareAChunk) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  auto bytes = RandomBytes(300000, 7);
  std::vector<ChunkId> ids;
  for (const char* name : {"a", "b"}) {
    auto ino = store->MakeNode(kRootIno, name, NewNode{S_IFREG | 0600, 0, 0, 0, "", kTimeNow});
    ASSERT_TRUE(ino.ok()) << ino.status().ToString();
    std::string staged = store->NewStagingPath();
    test::WriteFile(staged, bytes);
    auto committed = store->CommitFileContent(ino->ino, staged);
    ASSERT_TRUE(committed.ok()) << committed.status().ToString();
    EXPECT_EQ(committed->chunk.ToHex(), test::Sha256Hex(bytes)) << name;
    ids.push_back(committed->chunk);
  }
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(test::ReadWhole(*store, ids[0], bytes.size()), bytes);
  test::ExpectClean(*store);
}

TEST(ContentId, EqualXxh3ContentsAreDifferentChunks) {
  auto [x, y] = XxhCollision();
  ASSERT_NE(x, y);
  const XXH128_hash_t hx = XXH3_128bits(x.data(), x.size()), hy = XXH3_128bits(y.data(), y.size());
  ASSERT_TRUE(XXH128_isEqual(hx, hy)) << "the constructed pair must collide in XXH3-128";
  ASSERT_EQ(XXH3_64bits(x.data(), x.size()), XXH3_64bits(y.data(), y.size()))
      << "and in the per-block xxh3-64 checksum (the whole content is one block)";

  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  // One user stores X; later Y is stored (as a file, the way kdnfs commits it): Y must not
  // become a second reference to X.
  auto idx = store->Put(x);
  ASSERT_TRUE(idx.ok());
  auto ino = store->MakeNode(kRootIno, "y", NewNode{S_IFREG | 0600, 0, 0, 0, "", kTimeNow});
  ASSERT_TRUE(ino.ok()) << ino.status().ToString();
  std::string staged = store->NewStagingPath();
  test::WriteFile(staged, y);
  auto committed = store->CommitFileContent(ino->ino, staged);
  ASSERT_TRUE(committed.ok()) << committed.status().ToString();
  EXPECT_NE(committed->chunk, *idx);
  EXPECT_EQ(committed->chunk.ToHex(), test::Sha256Hex(y));
  EXPECT_EQ(store->Stats().dedup_hits, 0u);
  EXPECT_EQ(test::ReadWhole(*store, *idx, x.size()), x);
  EXPECT_EQ(test::ReadWhole(*store, committed->chunk, y.size()), y);
  test::ExpectClean(*store);
}

// An edge's verified fetch: a staged file whose id the caller computed becomes the chunk file by
// a rename (the same inode), private, read back intact, and still there after a reopen.
TEST(ContentId, AHashedStagingFileBecomesTheChunkFileItself) {
  test::TempDir dir("kdn-store");
  auto bytes = RandomBytes(300000, 11);
  auto id = ChunkId::FromHex(test::Sha256Hex(bytes));
  ASSERT_TRUE(id.ok());
  {
    auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
    ASSERT_NE(store, nullptr);
    auto ino = store->MakeNode(kRootIno, "f", NewNode{S_IFREG | 0600, 0, 0, 0, "", kTimeNow});
    ASSERT_TRUE(ino.ok()) << ino.status().ToString();
    std::string staged = store->NewStagingPath();
    test::WriteFile(staged, bytes);  // mode 0644: the store makes its chunk files private
    struct stat before;
    ASSERT_EQ(::stat(staged.c_str(), &before), 0);
    auto committed = store->CommitHashedFile(ino->ino, staged, *id);
    ASSERT_TRUE(committed.ok()) << committed.status().ToString();
    EXPECT_EQ(committed->chunk, *id);
    EXPECT_EQ(committed->size, bytes.size());
    EXPECT_NE(::access(staged.c_str(), F_OK), 0) << "the staged file is the chunk file now";
    const std::string hex = id->ToHex();
    struct stat chunk_file;
    ASSERT_EQ(::stat((dir.str() + "/chunks/" + hex.substr(0, 2) + "/" + hex).c_str(), &chunk_file),
              0);
    EXPECT_EQ(chunk_file.st_ino, before.st_ino) << "renamed, not copied";
    EXPECT_EQ(chunk_file.st_mode & 0777, 0600u);
    EXPECT_EQ(test::ReadWhole(*store, *id, bytes.size()), bytes);
    EXPECT_TRUE(store->VerifyChunk(*id).ok());
    test::ExpectClean(*store);
  }
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  auto f = store->Lookup(kRootIno, "f");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->chunk, *id);
  EXPECT_EQ(test::ReadWhole(*store, *id, bytes.size()), bytes);
  test::ExpectClean(*store);
}

TEST(ContentId, AHashedFileOfStoredContentOnlyTakesAReference) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  auto bytes = RandomBytes(200000, 12);
  auto put = store->Put(bytes);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  auto ino = store->MakeNode(kRootIno, "f", NewNode{S_IFREG | 0600, 0, 0, 0, "", kTimeNow});
  ASSERT_TRUE(ino.ok());
  std::string staged = store->NewStagingPath();
  test::WriteFile(staged, bytes);
  auto committed = store->CommitHashedFile(ino->ino, staged, *put);
  ASSERT_TRUE(committed.ok()) << committed.status().ToString();
  EXPECT_EQ(committed->chunk, *put);
  EXPECT_NE(::access(staged.c_str(), F_OK), 0) << "nothing left in staging/";
  EXPECT_EQ(store->Stats().chunks, 1u);
  EXPECT_EQ(test::ReadWhole(*store, *put, bytes.size()), bytes);
  test::ExpectClean(*store);
}

// The id is all the store takes on trust: `.kv` content is still verified, and only a file of its
// own staging directory is taken by a rename.
TEST(ContentId, AHashedFileIsStillCheckedAndMustBeStaged) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  auto ino = store->MakeNode(kRootIno, "f", NewNode{S_IFREG | 0600, 0, 0, 0, "", kTimeNow});
  ASSERT_TRUE(ino.ok());
  auto bad_kv = RandomBytes(100000, 13);
  std::memcpy(bad_kv.data(), kKvMagic.data(), kKvMagic.size());
  auto bad_id = ChunkId::FromHex(test::Sha256Hex(bad_kv));
  ASSERT_TRUE(bad_id.ok());
  std::string staged = store->NewStagingPath();
  test::WriteFile(staged, bad_kv);
  auto refused = store->CommitHashedFile(ino->ino, staged, *bad_id);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument) << refused.status().ToString();
  EXPECT_TRUE(store->GetAttr(ino->ino)->chunk.IsZero()) << "nothing committed";
  ::unlink(staged.c_str());

  auto bytes = RandomBytes(5000, 14);
  auto id = ChunkId::FromHex(test::Sha256Hex(bytes));
  ASSERT_TRUE(id.ok());
  const std::string outside = dir.str() + "/outside.tmp";
  test::WriteFile(outside, bytes);
  for (const std::string& path :
       {outside, store->staging_dir() + "/", store->staging_dir() + "/../outside.tmp"}) {
    auto r = store->CommitHashedFile(ino->ino, path, *id);
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << path << ": " << r.status().ToString();
  }
  EXPECT_EQ(::access(outside.c_str(), F_OK), 0) << "left alone";
  EXPECT_TRUE(store->GetAttr(ino->ino)->chunk.IsZero());
  test::ExpectClean(*store);
}

}  // namespace
}  // namespace kdn
