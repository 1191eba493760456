// Chunks: put/get round trips through every path (aligned, unaligned, staged file), dedup and
// reference counts, verification of what is read, extents, pins, reopen.
#include <sys/stat.h>

#include "iouring/aligned_buffer.h"
#include "store/chunk_id.h"
#include "store/chunk_layout.h"
#include "sha256_util.h"
#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

class ChunkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = test::OpenStore(dir_.str(), test::SmallStoreOptions());
    ASSERT_NE(store_, nullptr);
  }
  test::TempDir dir_{"kdn-store"};
  std::unique_ptr<Store> store_;
};

TEST_F(ChunkTest, PutGetRoundTripsAtManySizes) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{4095}, size_t{4096}, size_t{4097},
                      size_t{128 * 1024}, size_t{128 * 1024 + 1}, size_t{3 * 1024 * 1024 + 17}}) {
    auto bytes = RandomBytes(size, size);
    auto id = store_->Put(bytes);
    ASSERT_TRUE(id.ok()) << size << ": " << id.status().ToString();
    EXPECT_EQ(id->ToHex(), test::Sha256Hex(bytes)) << "chunk id is SHA-256";
    EXPECT_EQ(test::ReadWhole(*store_, *id, size), bytes) << size;
    auto info = store_->StatChunk(*id);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->size, size);
    EXPECT_EQ(info->stored_bytes, io::AlignUp(size, 4096));
    EXPECT_EQ(info->refs, 1u);
    EXPECT_TRUE(store_->VerifyChunk(*id).ok());
  }
  test::ExpectClean(*store_);
}

// /.kdn/metrics' histogram: cumulative counts at 2^k - 1 ns that never decrease, ending at the
// number of reads, and a sum of their times.
TEST_F(ChunkTest, ReadLatencyHistogramCountsEveryRead) {
  auto id = store_->Put(RandomBytes(100000, 1));
  ASSERT_TRUE(id.ok());
  const uint64_t before = store_->Stats().read_latency_count;
  for (int i = 0; i < 7; ++i) test::ReadWhole(*store_, *id, 100000);
  StoreStats s = store_->Stats();
  ASSERT_EQ(s.read_latency_buckets.size(),
            size_t(StoreStats::kReadLatencyLastPow2 - StoreStats::kReadLatencyFirstPow2 + 2));
  EXPECT_EQ(s.read_latency_count, s.reads);
  EXPECT_GE(s.read_latency_count, before + 7);
  EXPECT_EQ(s.read_latency_buckets.back(), s.read_latency_count);
  for (size_t i = 1; i < s.read_latency_buckets.size(); ++i) {
    EXPECT_GE(s.read_latency_buckets[i], s.read_latency_buckets[i - 1]) << i;
  }
  EXPECT_GT(s.read_latency_sum_ns, 0u);
  // The slowest read is within the bucket that first holds them all.
  size_t all = 0;
  while (s.read_latency_buckets[all] < s.read_latency_count) ++all;
  if (all + 1 < s.read_latency_buckets.size()) {
    EXPECT_LE(s.read_latency_max_ns,
              (uint64_t{1} << (StoreStats::kReadLatencyFirstPow2 + all)) - 1);
  }
}

TEST_F(ChunkTest, PartialReadsAtAnyOffsetAndAlignment) {
  auto bytes = RandomBytes(1000 * 1000, 7);
  auto id = store_->Put(bytes);
  ASSERT_TRUE(id.ok());
  io::AlignedBuffer aligned(2 << 20);
  auto rng = test::Rng(3);
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % (bytes.size() + 10);
    size_t len = rng() % 300000;
    size_t shift = (i % 3 == 0) ? 0 : (rng() % 4096);  // aligned and unaligned destinations
    std::span<std::byte> out(aligned.data() + shift, len);
    auto n = store_->Get(*id, off, out);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    size_t want = off >= bytes.size() ? 0 : std::min<size_t>(len, bytes.size() - off);
    ASSERT_EQ(*n, want) << "off " << off << " len " << len;
    ASSERT_EQ(std::memcmp(out.data(), bytes.data() + std::min<size_t>(off, bytes.size()), want), 0)
        << "off " << off << " len " << len << " shift " << shift;
  }
}

// Puts hash while they write, in pieces of whatever size the writes take: the id and the block
// sums must be those of the whole content.
TEST(ContentHasher, PiecesOfAnySizeGiveTheWholeContentsHashes) {
  auto rng = test::Rng(5);
  for (size_t size : {size_t{0}, size_t{1}, size_t{4096}, size_t{store::kBlockBytes},
                      size_t{store::kBlockBytes} * 3, size_t{1000003}}) {
    auto bytes = RandomBytes(size, size);
    store::ContentHasher hasher(store::kBlockBytes);
    for (size_t off = 0; off < size;) {
      size_t n = std::min<size_t>(size - off, 1 + rng() % (3 * store::kBlockBytes / 2));
      hasher.Update(std::span<const std::byte>(bytes).subspan(off, n));
      off += n;
    }
    std::vector<uint64_t> sums;
    EXPECT_EQ(hasher.Finish(&sums), store::HashChunk(bytes)) << size;
    ASSERT_EQ(sums.size(), (size + store::kBlockBytes - 1) / store::kBlockBytes) << size;
    for (size_t b = 0; b < sums.size(); ++b) {
      size_t at = b * store::kBlockBytes;
      EXPECT_EQ(sums[b], store::BlockSum(std::span<const std::byte>(bytes).subspan(
                             at, std::min<size_t>(store::kBlockBytes, size - at))))
          << size << " block " << b;
    }
  }
}

TEST_F(ChunkTest, SameBytesAreStoredOnceAndCounted) {
  auto bytes = RandomBytes(300000, 11);
  auto a = store_->Put(bytes);
  auto b = store_->Put(bytes);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(store_->StatChunk(*a)->refs, 2u);
  EXPECT_EQ(store_->Usage().chunks, 1u);
  EXPECT_EQ(store_->Stats().dedup_hits, 1u);
  const uint64_t used = store_->Usage().used_bytes;
  EXPECT_EQ(used, io::AlignUp(bytes.size(), 4096));
  ASSERT_TRUE(store_->Release(*a).ok());
  EXPECT_EQ(store_->StatChunk(*a)->refs, 1u);
  ASSERT_TRUE(store_->Release(*a).ok());
  EXPECT_TRUE(store_->StatChunk(*a).status().IsNotFound());
  EXPECT_TRUE(store_->Release(*a).IsNotFound());
  std::vector<std::byte> out(10);
  EXPECT_TRUE(store_->Get(*a, 0, out).status().IsNotFound());
  EXPECT_EQ(store_->Usage().chunks, 0u);
  test::ExpectClean(*store_);
}

TEST_F(ChunkTest, ExtentsDescribeTheBytes) {
  auto bytes = RandomBytes(6 * 1024 * 1024 + 100, 9);
  auto id = store_->Put(bytes);
  ASSERT_TRUE(id.ok());
  auto extents = store_->Extents(*id);
  ASSERT_TRUE(extents.ok());
  ASSERT_EQ(extents->size(), 1u);  // the chunk file, whole
  std::vector<std::byte> joined;
  for (const Extent& e : *extents) {
    EXPECT_EQ(e.offset, 0u);
    EXPECT_EQ(e.path, store_->dir() + "/chunks/" + id->ToHex().substr(0, 2) + "/" + id->ToHex());
    int fd = ::open(e.path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    std::vector<std::byte> part(e.length);
    ASSERT_EQ(::pread(fd, part.data(), part.size(), static_cast<off_t>(e.offset)),
              static_cast<ssize_t>(part.size()));
    ::close(fd);
    joined.insert(joined.end(), part.begin(), part.end());
  }
  EXPECT_EQ(joined, bytes);
}

TEST_F(ChunkTest, CorruptedBytesAreNeverReturned) {
  auto bytes = RandomBytes(400000, 13);
  auto id = store_->Put(bytes);
  ASSERT_TRUE(id.ok());
  auto extents = store_->Extents(*id);
  ASSERT_TRUE(extents.ok());
  // Flip one byte inside the second checksum block, behind the store's back.
  int fd = ::open(extents->front().path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const off_t at = static_cast<off_t>(extents->front().offset + 200000);
  std::byte b;
  ASSERT_EQ(::pread(fd, &b, 1, at), 1);
  b ^= std::byte{0x40};
  ASSERT_EQ(::pwrite(fd, &b, 1, at), 1);
  ::fsync(fd);
  ::close(fd);
  // O_DIRECT reads see the device; the page cache was not involved in the store's writes.
  std::vector<std::byte> out(bytes.size());
  auto n = store_->Get(*id, 0, out);
  EXPECT_TRUE(n.status().IsCorruption()) << n.status().ToString();
  // Reads of blocks that are intact still work.
  std::vector<std::byte> head(100000);
  ASSERT_TRUE(store_->Get(*id, 0, head).ok());
  EXPECT_EQ(std::memcmp(head.data(), bytes.data(), head.size()), 0);
  EXPECT_TRUE(store_->VerifyChunk(*id).IsCorruption());
  auto report = store_->Fsck();
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->clean());
  EXPECT_GE(store_->Stats().errors, 1u);
}

TEST_F(ChunkTest, KeptReferencesAndTouchesAreRecorded) {
  auto bytes = RandomBytes(10000, 1);
  auto id = store_->Put(bytes, PutOptions{.evictable = true});
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(store_->StatChunk(*id)->evictable);
  ASSERT_TRUE(store_->Put(bytes).ok());  // a kept reference
  EXPECT_FALSE(store_->StatChunk(*id)->evictable);
  ASSERT_TRUE(store_->Release(*id).ok());  // the evictable reference goes first
  EXPECT_FALSE(store_->StatChunk(*id)->evictable);
  int64_t before = store_->StatChunk(*id)->atime_ns;
  store_->Touch(*id);
  EXPECT_GE(store_->StatChunk(*id)->atime_ns, before);
}

TEST_F(ChunkTest, ReopenKeepsEverythingAndFreesTheRest) {
  std::vector<std::pair<ChunkId, std::vector<std::byte>>> kept;
  for (int i = 0; i < 20; ++i) {
    auto bytes = RandomBytes(50000 + i * 30000, 100 + i);
    auto id = store_->Put(bytes);
    ASSERT_TRUE(id.ok());
    if (i % 3 == 0) {
      ASSERT_TRUE(store_->Release(*id).ok());
    } else {
      kept.emplace_back(*id, std::move(bytes));
    }
  }
  const uint64_t used = store_->Usage().used_bytes;
  store_.reset();
  store_ = test::OpenStore(dir_.str(), test::SmallStoreOptions());
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(store_->Usage().used_bytes, used);
  EXPECT_EQ(store_->Usage().chunks, kept.size());
  for (const auto& [id, bytes] : kept) EXPECT_EQ(test::ReadWhole(*store_, id, bytes.size()), bytes);
  test::ExpectClean(*store_);
}

TEST(StoreOpen, SecondOpenerGetsAClearError) {
  test::TempDir dir("kdn-store");
  auto first = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(first, nullptr);
  auto second = Store::Open(dir.str(), test::SmallStoreOptions());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kBusy);
  EXPECT_NE(second.status().message().find("in use by another process"), std::string::npos)
      << second.status().ToString();
  first.reset();
  EXPECT_TRUE(Store::Open(dir.str(), test::SmallStoreOptions()).ok());
}

TEST(StoreOpen, RefusesForeignDirectoriesAndMissingStores) {
  test::TempDir dir("kdn-store");
  test::WriteFile(dir / "notes.txt", std::vector<std::byte>(3));
  auto s = Store::Open(dir.str(), test::SmallStoreOptions());
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument) << s.status().ToString();
  StoreOptions o = test::SmallStoreOptions();
  o.create_if_missing = false;
  EXPECT_TRUE(Store::Open(dir / "nothing", o).status().IsNotFound());
  o.io_bytes = 1000;
  EXPECT_EQ(Store::Open(dir / "x", o).status().code(), Code::kInvalidArgument);
}

TEST(StoreOpen, StrayStagingFilesAreRemoved) {
  test::TempDir dir("kdn-store");
  std::string stray;
  {
    auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
    ASSERT_NE(store, nullptr);
    stray = store->NewStagingPath();
    test::WriteFile(stray, RandomBytes(1000, 1));
  }
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  EXPECT_NE(::access(stray.c_str(), F_OK), 0);
}

TEST(StoreOpen, PsyncEngineServesTheSameBytes) {
  test::TempDir dir("kdn-store");
  StoreOptions o = test::SmallStoreOptions();
  o.io_engine = IoEngineKind::kPsync;
  auto store = test::OpenStore(dir.str(), o);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Stats().io_engine, "psync");
  auto bytes = RandomBytes(1234567, 2);
  auto id = store->Put(bytes);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(test::ReadWhole(*store, *id, bytes.size()), bytes);
  test::ExpectClean(*store);
}

}  // namespace
}  // namespace kdn
