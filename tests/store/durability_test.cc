// When changes become durable against power loss (include/kdn/store.h, "Durability"): every
// change is written to the OS when its call returns, and the metadata log is synced by Sync(),
// by a background thread every log_sync_interval_ms, and before released space is reused.
// A power loss cannot be simulated here; these tests check that the log sync happens where the
// guarantees need it (the store counts its log syncs and the changes not yet synced).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "store_test_util.h"

namespace kdn {
namespace {

constexpr uint32_t kNever = 3600 * 1000;  // no background sync during a test

StoreOptions WithInterval(uint32_t ms) {
  StoreOptions o = test::SmallStoreOptions();
  o.log_sync_interval_ms = ms;
  return o;
}

NewNode File() {
  NewNode n;
  n.mode = S_IFREG | 0644;
  return n;
}

TEST(Durability, SyncMakesEveryReturnedChangeDurable) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), WithInterval(kNever));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Sync().ok());
  const uint64_t syncs = store->Stats().log_syncs;
  EXPECT_EQ(store->Stats().unsynced_changes, 0u);

  // A thousand creates cost no log sync...
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(store->MakeNode(kRootIno, "f" + std::to_string(i), File()).ok());
  }
  StoreStats before = store->Stats();
  EXPECT_EQ(before.log_syncs, syncs);
  EXPECT_EQ(before.unsynced_changes, 1000u);
  // ...and one barrier makes them all durable.
  ASSERT_TRUE(store->Sync().ok());
  StoreStats after = store->Stats();
  EXPECT_EQ(after.log_syncs, syncs + 1);
  EXPECT_EQ(after.unsynced_changes, 0u);
  // Nothing left to sync: a second barrier costs nothing.
  ASSERT_TRUE(store->Sync().ok());
  EXPECT_EQ(store->Stats().log_syncs, syncs + 1);
}

TEST(Durability, IntervalZeroSyncsBeforeEveryCallReturns) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), WithInterval(0));
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(store->MakeNode(kRootIno, "f" + std::to_string(i), File()).ok());
    EXPECT_EQ(store->Stats().unsynced_changes, 0u) << i;
  }
  EXPECT_GE(store->Stats().log_syncs, 10u);
}

TEST(Durability, TheBackgroundSyncCatchesUp) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), WithInterval(20));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->MakeNode(kRootIno, "f", File()).ok());
  // No timing is asserted: only that it happens, with no call into the store.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (store->Stats().unsynced_changes > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(store->Stats().unsynced_changes, 0u);
}

TEST(Durability, ClosingAndReopeningKeepsUnsyncedChanges) {
  test::TempDir dir("kdn-store");
  {
    auto store = test::OpenStore(dir.str(), WithInterval(kNever));
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->MakeNode(kRootIno, "f", File()).ok());
    ASSERT_GT(store->Stats().unsynced_changes, 0u);
  }
  auto store = test::OpenStore(dir.str(), WithInterval(kNever));
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Lookup(kRootIno, "f").ok());
}

// Space a release frees is reused only once the release is durable: a power loss that undid the
// release would otherwise find the old chunk's extents holding the new chunk's bytes.
TEST(Durability, ADeletedChunksFileStaysUntilTheDeletionIsDurable) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), WithInterval(kNever));
  ASSERT_NE(store, nullptr);
  auto a = store->Put(test::RandomBytes(900 * 1024, 1));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  const std::string hex = a->ToHex();
  const std::string path = dir.str() + "/chunks/" + hex.substr(0, 2) + "/" + hex;
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
  ASSERT_TRUE(store->Release(*a).ok());
  // Freed for `df` at once...
  EXPECT_EQ(store->Usage().used_bytes, 0u);
  EXPECT_GT(store->Stats().unsynced_changes, 0u);
  // ...but a power loss now could undo the release: the file must still be there.
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  ASSERT_TRUE(store->Sync().ok());
  EXPECT_NE(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(store->Stats().unsynced_changes, 0u);
  test::ExpectClean(*store);
}

TEST(Durability, AChunkStoredAgainBeforeTheSyncKeepsItsFile) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), WithInterval(kNever));
  ASSERT_NE(store, nullptr);
  auto bytes = test::RandomBytes(300 * 1024, 7);
  auto a = store->Put(bytes);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(store->Release(*a).ok());
  auto b = store->Put(bytes);  // the same chunk, published again while its removal waits
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(*a, *b);
  ASSERT_TRUE(store->Sync().ok());
  EXPECT_EQ(test::ReadWhole(*store, *b, bytes.size()), bytes);
  test::ExpectClean(*store);
}

}  // namespace
}  // namespace kdn
