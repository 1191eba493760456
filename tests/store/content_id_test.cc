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

}  // namespace
}  // namespace kdn
