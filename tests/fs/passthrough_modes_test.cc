// The open-mode bookkeeping of fs/kdnfs/passthrough.h without a mount: how readers of small
// committed content are served (kCachedReader), when the kernel may keep an inode's pages, and
// how such readers hold writers off. (Mounted behaviour: passthrough_test.cc.)
#include "fs/kdnfs/passthrough.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kdn/store.h"
#include "test_util.h"

namespace kdn::fs {
namespace {

ChunkId IdOf(uint8_t b) {
  ChunkId id;
  id.bytes.fill(b);
  return id;
}

CommittedContent Small(uint8_t b) {
  return CommittedContent{IdOf(b), 4096};
}

// Negotiate() turns the bookkeeping on only with CAP_SYS_ADMIN (root in CI).
#define START(pt)                                                                    \
  do {                                                                               \
    KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "passthrough needs root (CAP_SYS_ADMIN)"); \
    ASSERT_TRUE((pt).Negotiate(fuse_abi::kInitPassthrough, -1));                     \
  } while (0)

TEST(PassthroughModes, TheKernelKeepsASmallFilesPagesOnlyWhileTheyHoldItsContent) {
  FsCounters counters;
  Passthrough pt(nullptr, &counters, true);
  START(pt);
  auto d = pt.Open(7, O_RDONLY, Small(1));
  EXPECT_EQ(d.mode, OpenMode::kCachedReader);
  EXPECT_FALSE(d.keep_cache) << "pages of unknown content were kept";
  pt.Release(7, d.mode);
  d = pt.Open(7, O_RDONLY, Small(1));
  EXPECT_TRUE(d.keep_cache) << "the pages of the same content were dropped";
  // Two readers at once share them.
  auto d2 = pt.Open(7, O_RDONLY, Small(1));
  EXPECT_EQ(d2.mode, OpenMode::kCachedReader);
  EXPECT_TRUE(d2.keep_cache);
  pt.Release(7, d.mode);
  pt.Release(7, d2.mode);
  // Other content (changed behind the kernel): dropped once, then kept.
  d = pt.Open(7, O_RDONLY, Small(2));
  EXPECT_FALSE(d.keep_cache);
  pt.Release(7, d.mode);
  d = pt.Open(7, O_RDONLY, Small(2));
  EXPECT_TRUE(d.keep_cache);
  pt.Release(7, d.mode);
  // A writer puts its bytes in the pages: the next reader drops them, even for the same id.
  auto w = pt.Open(7, O_WRONLY, std::nullopt);
  EXPECT_EQ(w.mode, OpenMode::kCached);
  pt.Release(7, w.mode);
  d = pt.Open(7, O_RDONLY, Small(2));
  EXPECT_FALSE(d.keep_cache) << "a writer's pages were kept";
  pt.Release(7, d.mode);
  // So does a created file's writer.
  w = pt.OpenServed(7);
  pt.Release(7, w.mode);
  d = pt.Open(7, O_RDONLY, Small(2));
  EXPECT_FALSE(d.keep_cache) << "a creator's pages were kept";
  pt.Release(7, d.mode);
  EXPECT_EQ(counters.served_opens.load(), 9u);
  EXPECT_EQ(counters.passthrough_opens.load(), 0u);
}

TEST(PassthroughModes, SmallFilesReadersHoldWritersOffUntilTheyAreReleased) {
  FsCounters counters;
  Passthrough pt(nullptr, &counters, true);
  START(pt);
  auto r = pt.Open(9, O_RDONLY, Small(3));
  ASSERT_EQ(r.mode, OpenMode::kCachedReader);
  // Refused after the busy wait: open for writing, O_TRUNC, truncate(2).
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(pt.Open(9, O_WRONLY, std::nullopt).error, ETXTBSY);
  EXPECT_GE(std::chrono::steady_clock::now() - start, Passthrough::kBusyWait);
  EXPECT_EQ(pt.Open(9, O_RDONLY | O_TRUNC, Small(3)).error, ETXTBSY);
  EXPECT_FALSE(pt.CheckChangeable(9).ok());
  // Readers of other inodes, and other readers of this one, are not held.
  EXPECT_EQ(pt.Open(10, O_WRONLY, std::nullopt).error, 0);
  auto r2 = pt.Open(9, O_RDONLY, Small(3));
  EXPECT_EQ(r2.mode, OpenMode::kCachedReader);
  pt.Release(9, r2.mode);
  // A release during the wait lets the writer in.
  std::thread release([&] {
    std::this_thread::sleep_for(Passthrough::kBusyWait / 4);
    pt.Release(9, r.mode);
  });
  auto w = pt.Open(9, O_WRONLY, std::nullopt);
  release.join();
  EXPECT_EQ(w.error, 0);
  EXPECT_EQ(w.mode, OpenMode::kCached);
  // A reader beside the writer reads the committed content uncached (direct mode).
  auto beside = pt.Open(9, O_RDONLY, Small(3));
  EXPECT_EQ(beside.mode, OpenMode::kDirect);
  EXPECT_TRUE(pt.WriterOpen(9));
  pt.Release(9, beside.mode);
  pt.Release(9, w.mode);
  EXPECT_TRUE(pt.CheckChangeable(9).ok());
}

// Only content of up to cached_read_max bytes is read from the page cache; anything larger, and
// everything with cached_read_max 0 (an origin tier), is passed through when it can be (here it
// cannot: no /dev/fuse to register the chunk file with, so kdnfs serves it, uncached).
TEST(PassthroughModes, OnlySmallContentIsReadFromThePageCache) {
  kdn::test::TempDir dir("kdn-pt");
  auto store = Store::Open(dir.str());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::vector<std::byte> small(Passthrough::kCachedReadMax, std::byte{5});
  std::vector<std::byte> large(Passthrough::kCachedReadMax + 1, std::byte{6});
  auto small_id = (*store)->Put(small, {});
  auto large_id = (*store)->Put(large, {});
  ASSERT_TRUE(small_id.ok() && large_id.ok());
  const CommittedContent small_content{*small_id, small.size()};
  const CommittedContent large_content{*large_id, large.size()};

  FsCounters counters;
  Passthrough pt(store->get(), &counters, true);
  START(pt);
  auto d = pt.Open(12, O_RDONLY, small_content);
  EXPECT_EQ(d.mode, OpenMode::kCachedReader);
  pt.Release(12, d.mode);
  d = pt.Open(13, O_RDONLY, large_content);
  EXPECT_EQ(d.mode, OpenMode::kDirect);
  pt.Release(13, d.mode);

  Passthrough uncached(store->get(), &counters, true, 0);
  START(uncached);
  d = uncached.Open(12, O_RDONLY, small_content);
  EXPECT_EQ(d.mode, OpenMode::kDirect);
  uncached.Release(12, d.mode);
}

}  // namespace
}  // namespace kdn::fs
