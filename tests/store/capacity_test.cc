// Capacity and faults: eviction in LRU order of what may be evicted, ENOSPC that leaves nothing
// behind, disk errors reported and survived, lost writes detected.
#include <sys/stat.h>

#include "fault/fault_injector.h"
#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

constexpr uint64_t kChunk = 256 * 1024;

class CapacityTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(kChunk * 4); }
  void TearDown() override { io::ClearFaultPlan(); }
  void Open(uint64_t capacity) {
    store_.reset();
    StoreOptions o;
    o.capacity_bytes = capacity;
    if (io_bytes_ != 0) o.io_bytes = io_bytes_;
    o.io_wrapper = io::FaultInjection();
    o.on_evict = [this](const std::vector<EvictedName>& names) {
      for (const auto& n : names) evicted_.push_back(n.name);
    };
    store_ = test::OpenStore(dir_.str(), o);
    ASSERT_NE(store_, nullptr);
  }
  Result<InodeAttr> CommitNew(Ino dir, const std::string& name, uint64_t seed) {
    NewNode n;
    n.mode = S_IFREG | 0644;
    auto f = store_->MakeNode(dir, name, n);
    if (!f.ok()) return f.status();
    std::string staged = store_->NewStagingPath();
    test::WriteFile(staged, RandomBytes(kChunk, seed));
    return store_->CommitFileContent(f->ino, staged);
  }

  test::TempDir dir_{"kdn-cap"};
  std::unique_ptr<Store> store_;
  uint32_t io_bytes_ = 0;  // StoreOptions::io_bytes when not 0
  std::vector<std::string> evicted_;
};

TEST_F(CapacityTest, FullStoreSaysEnospcAndStaysSound) {
  std::vector<ChunkId> ids;
  for (int i = 0; i < 4; ++i) {
    auto id = store_->Put(RandomBytes(kChunk, i));
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  StoreUsage u = store_->Usage();
  EXPECT_EQ(u.capacity_bytes, 4 * kChunk);
  EXPECT_EQ(u.used_bytes, 4 * kChunk);
  EXPECT_EQ(u.free_bytes, 0u);
  auto over = store_->Put(RandomBytes(kChunk, 99));
  ASSERT_FALSE(over.ok());
  EXPECT_TRUE(over.status().IsNoSpace()) << over.status().ToString();
  EXPECT_EQ(over.status().sys_errno(), ENOSPC);
  EXPECT_EQ(store_->Usage().chunks, 4u);
  EXPECT_EQ(store_->Usage().used_bytes, 4 * kChunk);
  // Files fail the same way, and keep their previous content.
  auto f = CommitNew(kRootIno, "f", 100);
  EXPECT_TRUE(f.status().IsNoSpace());
  EXPECT_EQ(store_->Lookup(kRootIno, "f")->size, 0u);
  EXPECT_TRUE(store_->Put(RandomBytes(5 * kChunk, 1)).status().IsNoSpace());  // larger than all
  test::ExpectClean(*store_);
  // Releasing makes room again.
  ASSERT_TRUE(store_->Release(ids[0]).ok());
  EXPECT_TRUE(store_->Put(RandomBytes(kChunk, 99)).ok());
  test::ExpectClean(*store_);
}

TEST_F(CapacityTest, EvictsLeastRecentlyUsedEvictableChunksOnly) {
  auto keep = store_->Put(RandomBytes(kChunk, 1));  // not evictable
  ASSERT_TRUE(keep.ok());
  std::vector<ChunkId> cache;
  for (int i = 0; i < 3; ++i) {
    auto id = store_->Put(RandomBytes(kChunk, 10 + i), PutOptions{.evictable = true});
    ASSERT_TRUE(id.ok());
    cache.push_back(*id);
  }
  std::vector<std::byte> tmp(100);
  ASSERT_TRUE(store_->Get(cache[0], 0, tmp).ok());  // cache[0] is now the most recent
  auto next = store_->Put(RandomBytes(kChunk, 20), PutOptions{.evictable = true});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_TRUE(store_->StatChunk(cache[1]).status().IsNotFound()) << "oldest evictable goes first";
  EXPECT_TRUE(store_->StatChunk(cache[0]).ok());
  EXPECT_TRUE(store_->StatChunk(cache[2]).ok());
  EXPECT_TRUE(store_->StatChunk(*keep).ok());
  EXPECT_EQ(store_->Stats().evictions, 1u);
  EXPECT_TRUE(store_->Release(cache[1]).IsNotFound());
  // A kept reference protects a chunk that evictable ones share (a Put of stored bytes costs no
  // space); when only kept chunks remain, the store is full.
  ASSERT_TRUE(store_->Put(RandomBytes(kChunk, 10)).ok());
  ASSERT_TRUE(store_->Put(RandomBytes(kChunk, 12)).ok());
  ASSERT_TRUE(store_->Put(RandomBytes(kChunk, 20)).ok());
  EXPECT_FALSE(store_->StatChunk(cache[0])->evictable);
  EXPECT_TRUE(store_->Put(RandomBytes(kChunk, 21)).status().IsNoSpace());
  test::ExpectClean(*store_);
}

TEST_F(CapacityTest, EvictionRemovesFilesOfEvictableDirectories) {
  NewNode dir;
  dir.mode = S_IFDIR | 0755;
  auto cache = store_->MakeNode(kRootIno, "cache", dir);
  auto docs = store_->MakeNode(kRootIno, "docs", dir);
  ASSERT_TRUE(cache.ok() && docs.ok());
  ASSERT_TRUE(store_->SetEvictable(cache->ino, true).ok());
  ASSERT_TRUE(CommitNew(docs->ino, "keep.kv", 1).ok());
  ASSERT_TRUE(CommitNew(cache->ino, "old.kv", 2).ok());
  auto pinned = CommitNew(cache->ino, "pinned.kv", 3);
  ASSERT_TRUE(pinned.ok());
  ASSERT_TRUE(store_->SetPinned(pinned->ino, true).ok());
  auto open = CommitNew(cache->ino, "open.kv", 4);
  ASSERT_TRUE(open.ok());
  ASSERT_TRUE(store_->OpenInode(open->ino).ok());
  // Full. The only file that may go is old.kv: not pinned, not open, in an evictable directory.
  auto fresh = CommitNew(cache->ino, "new.kv", 5);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_TRUE(store_->Lookup(cache->ino, "old.kv").status().IsNotFound());
  EXPECT_TRUE(store_->Lookup(cache->ino, "pinned.kv").ok());
  EXPECT_TRUE(store_->Lookup(cache->ino, "open.kv").ok());
  EXPECT_TRUE(store_->Lookup(docs->ino, "keep.kv").ok());
  EXPECT_EQ(evicted_, std::vector<std::string>{"old.kv"});
  ASSERT_TRUE(store_->SetPinned(fresh->ino, true).ok());
  EXPECT_TRUE(CommitNew(cache->ino, "more.kv", 6).status().IsNoSpace());
  // Closing the open file makes it a candidate again.
  ASSERT_TRUE(store_->CloseInode(open->ino).ok());
  ASSERT_TRUE(store_->Lookup(cache->ino, "more.kv").ok());  // created (empty) before the failure
  std::string staged = store_->NewStagingPath();
  test::WriteFile(staged, RandomBytes(kChunk, 6));
  ASSERT_TRUE(store_->CommitFileContent(store_->Lookup(cache->ino, "more.kv")->ino, staged).ok());
  EXPECT_TRUE(store_->Lookup(cache->ino, "open.kv").status().IsNotFound());
  test::ExpectClean(*store_);
}

TEST_F(CapacityTest, CapacityCanChangeAtOpen) {
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(store_->Put(RandomBytes(kChunk, i)).ok());
  Open(kChunk * 8);
  EXPECT_EQ(store_->Usage().capacity_bytes, kChunk * 8);
  EXPECT_TRUE(store_->Put(RandomBytes(kChunk, 50)).ok());
  Open(0);  // keeps the recorded limit
  EXPECT_EQ(store_->Usage().capacity_bytes, kChunk * 8);
  test::ExpectClean(*store_);
}

class FaultTest : public CapacityTest {
 protected:
  // Several write requests per chunk, so that a put can fail after some of its writes succeeded.
  void SetUp() override {
    io_bytes_ = 64 * 1024;
    Open(64 * kChunk);
  }
};

TEST_F(FaultTest, DiskErrorsOnWriteLeaveNothingVisible) {
  auto before = store_->Put(RandomBytes(kChunk, 1));
  ASSERT_TRUE(before.ok());
  for (int err : {EIO, ENOSPC}) {
    io::FaultPlan plan;
    plan.fail_at = 2;
    plan.fail_op = io::FaultOp::kWrite;
    plan.fail_errno = err;
    io::SetFaultPlan(plan);
    auto r = store_->Put(RandomBytes(kChunk, 2));
    io::ClearFaultPlan();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().sys_errno(), err) << r.status().ToString();
    EXPECT_EQ(store_->Usage().chunks, 1u);
    EXPECT_EQ(store_->Usage().used_bytes, kChunk);  // the reserved space came back
  }
  io::FaultPlan sync_fails;
  sync_fails.fail_at = 1;
  sync_fails.fail_op = io::FaultOp::kSync;
  io::SetFaultPlan(sync_fails);
  EXPECT_EQ(store_->Put(RandomBytes(kChunk, 3)).status().sys_errno(), EIO);
  io::ClearFaultPlan();
  EXPECT_EQ(store_->Usage().chunks, 1u);
  EXPECT_GE(store_->Stats().errors, 3u);
  Open(0);  // a failed sync is sticky (SyncFailureIsStickyUntilReopen): start afresh
  auto after = store_->Put(RandomBytes(kChunk, 2));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(test::ReadWhole(*store_, *after, kChunk), RandomBytes(kChunk, 2));
  test::ExpectClean(*store_);
}

// Once a data sync failed, what the disk holds is in doubt: every later change fails with that
// error (reads still work) until the store is reopened, as LevelDB's bg_error_.
TEST_F(FaultTest, SyncFailureIsStickyUntilReopen) {
  auto before = store_->Put(RandomBytes(kChunk, 1));
  ASSERT_TRUE(before.ok());
  io::FaultPlan sync_fails;
  sync_fails.fail_at = 1;
  sync_fails.fail_op = io::FaultOp::kSync;
  io::SetFaultPlan(sync_fails);
  EXPECT_EQ(store_->Put(RandomBytes(kChunk, 2)).status().sys_errno(), EIO);
  io::ClearFaultPlan();
  // The disk works again, but the store does not trust it: writes fail with the first error.
  for (uint64_t seed : {3, 4}) {
    auto again = store_->Put(RandomBytes(kChunk, seed));
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.status().sys_errno(), EIO);
    EXPECT_NE(again.status().message().find("reopened"), std::string::npos)
        << again.status().ToString();
  }
  NewNode dir;
  dir.mode = S_IFDIR | 0755;
  EXPECT_FALSE(store_->MakeNode(kRootIno, "d", dir).ok());
  EXPECT_EQ(test::ReadWhole(*store_, *before, kChunk), RandomBytes(kChunk, 1));  // reads work
  Open(0);
  auto after = store_->Put(RandomBytes(kChunk, 3));
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(test::ReadWhole(*store_, *after, kChunk), RandomBytes(kChunk, 3));
  test::ExpectClean(*store_);
}

TEST_F(FaultTest, ReadErrorsAreReported) {
  auto id = store_->Put(RandomBytes(kChunk, 1));
  ASSERT_TRUE(id.ok());
  io::FaultPlan plan;
  plan.fail_at = 1;
  plan.fail_op = io::FaultOp::kRead;
  io::SetFaultPlan(plan);
  std::vector<std::byte> out(kChunk);
  auto n = store_->Get(*id, 0, out);
  io::ClearFaultPlan();
  EXPECT_EQ(n.status().sys_errno(), EIO) << n.status().ToString();
  EXPECT_NE(n.status().message().find("/chunks/" + id->ToHex().substr(0, 2) + "/" + id->ToHex()),
            std::string::npos)
      << "the message names the chunk file: " << n.status().ToString();
  EXPECT_TRUE(store_->Get(*id, 0, out).ok());
}

TEST_F(FaultTest, LostWritesAreDetectedNotServed) {
  // A disk that acknowledges writes and loses them: the store cannot prevent it, but it must
  // never return the garbage.
  io::FaultPlan plan;
  plan.drop_writes_after = 0;
  io::SetFaultPlan(plan);
  auto bytes = RandomBytes(kChunk, 7);
  auto id = store_->Put(bytes);
  io::ClearFaultPlan();
  ASSERT_TRUE(id.ok());
  Open(0);
  std::vector<std::byte> out(kChunk);
  EXPECT_TRUE(store_->Get(*id, 0, out).status().IsCorruption());
  auto report = store_->Fsck();
  ASSERT_TRUE(report.ok());
  ASSERT_FALSE(report->clean());
  EXPECT_NE(report->problems.front().find("checksum mismatch"), std::string::npos)
      << report->problems.front();
}

}  // namespace
}  // namespace kdn
