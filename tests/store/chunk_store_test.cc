// The chunk store on its own (store/chunk_store.h): a store::ChunkStore over a store::TxnLog, with
// no namespace and no kdn::Store around it. What it guarantees through its interface: content is
// stored once however often it is put, and its file goes once the last reference is released and
// that release is durable; eviction picks the least recently used chunk and reaches the names
// only through the ReleaseNames registered with it, which may keep a chunk (an open file).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "store/chunk_store.h"
#include "store/clock.h"
#include "store/schema.h"
#include "store/txn.h"
#include "store_test_util.h"

namespace kdn::store {
namespace {

constexpr uint32_t kNever = 3600 * 1000;  // no background log sync during a test
constexpr size_t kChunk = 64 << 10;

// A chunk store set up as Store::Impl's open does, without the namespace: eviction asks `release`
// instead.
class ChunkStoreRig {
 public:
  explicit ChunkStoreRig(uint64_t capacity) {
    TxnHooks hooks = chunks.TxnHooksForChunks();
    hooks.apply = [this](TxnEffects& fx) { chunks.ApplyEffects(fx); };
    txn.SetHooks(std::move(hooks));
    TxnLog::Options o;
    o.dir = dir.str();
    o.log_sync_interval_ms = kNever;
    o.errors = chunks.error_counter();
    opened = txn.Open(o, true);
    if (opened.ok()) opened = InitSchema(txn.writer(), ::geteuid(), ::getegid(), NowNs());
    if (opened.ok() && ::mkdir((dir.str() + "/staging").c_str(), kDirMode) != 0) {
      opened = Status::FromErrno("creating staging/", errno);
    }
    readers = std::make_unique<DbPool>(dir.str() + "/meta.db");
    ChunkStoreSetup setup;
    setup.dir = dir.str();
    setup.readers = readers.get();
    setup.capacity = capacity;
    // As the store's open makes them: bounce space for unaligned reads.
    setup.engines.buffer_count = setup.engines.queue_depth;
    setup.engines.buffer_bytes = 256 * 1024;
    setup.release_names = [this](Db&, const ChunkId& id, int64_t, TxnEffects&) -> Result<bool> {
      asked.push_back(id);
      return keep.count(id) == 0;
    };
    if (opened.ok()) opened = chunks.Open(std::move(setup));
  }
  ~ChunkStoreRig() {
    chunks.Close();
    readers.reset();
    txn.CloseWriter();
  }

  bool HasFile(const ChunkId& id) {
    struct stat st;
    return ::stat(chunks.files().PathOf(id).c_str(), &st) == 0;
  }

  test::TempDir dir{"kdn-chunks"};
  TxnLog txn;
  ChunkStore chunks{txn};
  std::unique_ptr<DbPool> readers;
  Status opened;
  std::vector<ChunkId> asked;  // what eviction asked of the names, in order
  std::set<ChunkId> keep;      // the names of these refuse (open files)
};

TEST(ChunkStore, ContentIsStoredOnceAndItsFileGoesWithTheLastDurableRelease) {
  ChunkStoreRig rig(0);
  ASSERT_TRUE(rig.opened.ok()) << rig.opened.ToString();
  const std::vector<std::byte> bytes = test::RandomBytes(3 * kChunk + 100, 1);
  auto a = rig.chunks.Put(bytes, PutOptions{});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = rig.chunks.Put(bytes, PutOptions{});
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(rig.chunks.counters().dedup_hits.load(), 1u);
  EXPECT_EQ(rig.chunks.chunk_count(), 1);
  auto info = rig.chunks.StatChunk(*a);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->refs, 2u);
  EXPECT_EQ(info->size, bytes.size());

  std::vector<std::byte> back(bytes.size());
  auto n = rig.chunks.Get(*a, 0, back);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, bytes.size());
  EXPECT_EQ(back, bytes);
  EXPECT_TRUE(rig.chunks.VerifyChunk(*a).ok());

  ASSERT_TRUE(rig.chunks.Release(*a).ok());
  EXPECT_TRUE(rig.HasFile(*a));
  ASSERT_TRUE(rig.chunks.Release(*a).ok());
  EXPECT_EQ(rig.chunks.StatChunk(*a).status().code(), Code::kNotFound);
  EXPECT_EQ(rig.chunks.chunk_count(), 0);
  EXPECT_TRUE(rig.HasFile(*a)) << "removed before the deletion was durable";
  ASSERT_TRUE(rig.txn.SyncAll().ok());
  EXPECT_FALSE(rig.HasFile(*a));
  EXPECT_EQ(rig.chunks.BytesInUse(), 0u);
}

TEST(ChunkStore, EvictionTakesTheLeastRecentlyUsedThatItsNamesLetGo) {
  ChunkStoreRig rig(3 * kChunk);
  ASSERT_TRUE(rig.opened.ok()) << rig.opened.ToString();
  PutOptions evictable;
  evictable.evictable = true;
  std::vector<ChunkId> ids;
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    auto id = rig.chunks.Put(test::RandomBytes(kChunk, seed), evictable);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  // The oldest is held by an open file: its names refuse, and the next oldest goes instead.
  rig.keep.insert(ids[0]);
  std::vector<std::byte> one(1);
  ASSERT_TRUE(rig.chunks.Get(ids[2], 0, one).ok());  // the most recently used
  auto fourth = rig.chunks.Put(test::RandomBytes(kChunk, 4), evictable);
  ASSERT_TRUE(fourth.ok()) << fourth.status().ToString();
  ASSERT_EQ(rig.asked.size(), 2u);
  EXPECT_EQ(rig.asked[0], ids[0]);
  EXPECT_EQ(rig.asked[1], ids[1]);
  EXPECT_TRUE(rig.chunks.StatChunk(ids[0]).ok());
  EXPECT_EQ(rig.chunks.StatChunk(ids[1]).status().code(), Code::kNotFound);
  EXPECT_TRUE(rig.chunks.StatChunk(ids[2]).ok());
  EXPECT_EQ(rig.chunks.counters().evictions.load(), 1u);
  EXPECT_EQ(rig.chunks.BytesInUse(), 3 * kChunk);

  // Nothing left that the names let go: a put that needs room fails, and holds nothing.
  rig.keep.insert(ids[2]);
  ASSERT_TRUE(rig.chunks.Release(*fourth).ok());  // frees room: no eviction needed for the next
  PutOptions kept;
  auto fifth = rig.chunks.Put(test::RandomBytes(kChunk, 5), kept);
  ASSERT_TRUE(fifth.ok()) << fifth.status().ToString();
  auto sixth = rig.chunks.Put(test::RandomBytes(kChunk, 6), kept);
  EXPECT_EQ(sixth.status().code(), Code::kNoSpace) << sixth.status().ToString();
  EXPECT_EQ(rig.chunks.BytesInUse(), 3 * kChunk);
}

}  // namespace
}  // namespace kdn::store
