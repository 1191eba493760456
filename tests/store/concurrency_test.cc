// Many threads at once: writers and readers of chunks, releases racing reads (released space must
// not be reused under a read), and namespace operations on one directory.
#include <sys/stat.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

struct IdLess {
  bool operator()(const ChunkId& a, const ChunkId& b) const {
    return a < b;
  }
};

size_t SizeFor(uint64_t seed) {
  return 1 + (seed * 7919) % (600 * 1024);
}

TEST(Concurrency, ManyWritersAndReaders) {
  test::TempDir dir("kdn-conc");
  StoreOptions o = test::SmallStoreOptions();
  auto store = test::OpenStore(dir.str(), o);
  ASSERT_NE(store, nullptr);
  std::mutex mu;
  std::map<ChunkId, uint64_t, IdLess> live;  // id -> seed, for the readers
  std::map<ChunkId, int, IdLess> refs;       // references the writers still hold
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  auto fail = [&](const std::string& what) {
    ++failures;
    ADD_FAILURE() << what;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto rng = test::Rng(t);
      std::vector<ChunkId> mine;
      for (int i = 0; i < 30; ++i) {
        uint64_t seed = rng() % 40;  // a small pool: threads often put the same bytes
        auto bytes = RandomBytes(SizeFor(seed), seed);
        auto id = store->Put(bytes);
        if (!id.ok()) return fail("put: " + id.status().ToString());
        // Read back before the reference is shared: once in `refs`, any writer that put the same
        // bytes before may release it (references to one chunk are interchangeable).
        std::vector<std::byte> back(bytes.size());
        auto n = store->Get(*id, 0, back);
        if (!n.ok()) return fail("read back after put: " + n.status().ToString());
        if (back != bytes) return fail("read back after put: other bytes");
        {
          std::lock_guard lock(mu);
          live[*id] = seed;
          ++refs[*id];
        }
        mine.push_back(*id);
        if (rng() % 2 == 0) {
          ChunkId victim = mine[rng() % mine.size()];
          std::lock_guard lock(mu);
          if (refs[victim] > 0) {
            Status s = store->Release(victim);
            if (!s.ok()) return fail("release: " + s.ToString());
            if (--refs[victim] == 0) live.erase(victim);
          }
        }
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto rng = test::Rng(100 + r);
      std::vector<std::byte> out(600 * 1024);
      while (!done) {
        ChunkId id;
        uint64_t seed;
        {
          std::lock_guard lock(mu);
          if (live.empty()) continue;
          auto it = live.begin();
          std::advance(it, rng() % live.size());
          id = it->first;
          seed = it->second;
        }
        auto n = store->Get(id, 0, out);
        if (!n.ok()) {
          if (!n.status().IsNotFound()) fail("concurrent read: " + n.status().ToString());
          continue;
        }
        auto want = RandomBytes(SizeFor(seed), seed);
        if (*n != want.size() || std::memcmp(out.data(), want.data(), want.size()) != 0) {
          fail("concurrent read returned wrong bytes");
        }
      }
    });
  }
  for (int t = 0; t < 6; ++t) threads[t].join();
  done = true;
  for (size_t t = 6; t < threads.size(); ++t) threads[t].join();
  ASSERT_EQ(failures.load(), 0);
  size_t held = 0;
  for (const auto& [id, n] : refs) {
    if (n == 0) continue;
    ++held;
    auto info = store->StatChunk(id);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->refs, static_cast<uint32_t>(n));
  }
  EXPECT_EQ(store->Usage().chunks, held);
  test::ExpectClean(*store);
}

TEST(Concurrency, ReleasedSpaceIsNotReusedUnderAReader) {
  test::TempDir dir("kdn-conc");
  StoreOptions o;
  constexpr size_t kSize = 512 * 1024;
  o.capacity_bytes = 6 * kSize;  // space is recycled within a few puts
  auto store = test::OpenStore(dir.str(), o);
  ASSERT_NE(store, nullptr);
  std::mutex mu;
  std::vector<std::pair<ChunkId, uint64_t>> current;
  std::atomic<bool> done{false};
  std::atomic<int> bad{0}, good{0}, gone{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      auto rng = test::Rng(r);
      std::vector<std::byte> out(kSize);
      while (!done) {
        std::pair<ChunkId, uint64_t> pick;
        {
          std::lock_guard lock(mu);
          if (current.empty()) continue;
          pick = current[rng() % current.size()];
        }
        auto n = store->Get(pick.first, 0, out);
        if (!n.ok()) {
          if (n.status().IsNotFound()) {
            ++gone;
          } else {
            ++bad;
            ADD_FAILURE() << n.status().ToString();
          }
          continue;
        }
        if (out != RandomBytes(kSize, pick.second)) {
          ++bad;
        } else {
          ++good;
        }
      }
    });
  }
  std::vector<ChunkId> order;
  for (uint64_t i = 0; i < 60; ++i) {
    auto id = store->Put(RandomBytes(kSize, i));
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    {
      std::lock_guard lock(mu);
      current.emplace_back(*id, i);
      if (current.size() > 3) current.erase(current.begin());
    }
    order.push_back(*id);
    // Released while readers may be in the middle of it: its space is reused by the next puts.
    if (order.size() > 2) {
      ASSERT_TRUE(store->Release(order[order.size() - 3]).ok());
    }
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(good.load(), 0);
  test::ExpectClean(*store);
}

TEST(Concurrency, NamespaceOperationsOnOneDirectory) {
  test::TempDir dir("kdn-conc");
  StoreOptions o = test::SmallStoreOptions();
  o.sync = SyncPolicy::kNone;
  auto store = test::OpenStore(dir.str(), o);
  ASSERT_NE(store, nullptr);
  NewNode d;
  d.mode = S_IFDIR | 0755;
  auto set = store->MakeNode(kRootIno, "set", d);
  ASSERT_TRUE(set.ok());
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto rng = test::Rng(t);
      for (int i = 0; i < 40; ++i) {
        std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
        NewNode f;
        f.mode = S_IFREG | 0644;
        auto a = store->MakeNode(set->ino, name, f);
        if (!a.ok()) {
          ++failures;
          continue;
        }
        std::string staged = store->NewStagingPath();
        test::WriteFile(staged, RandomBytes(1000 + rng() % 100000, rng() % 20));
        if (!store->CommitFileContent(a->ino, staged).ok()) ++failures;
        switch (rng() % 4) {
          case 0:
            store->Unlink(set->ino, name).ok();
            break;
          case 1:
            store->Rename(set->ino, name, set->ino, "shared").ok();
            break;  // replaces
          case 2:
            store->Link(a->ino, set->ino, name + ".link").ok();
            break;
          default:
            break;
        }
      }
    });
  }
  threads.emplace_back([&] {
    while (!done) {
      uint64_t cookie = 0;
      while (true) {
        auto page = store->ReadDir(set->ino, cookie, 16);
        if (!page.ok()) {
          ++failures;
          break;
        }
        if (page->empty()) break;
        cookie = page->back().cookie;
      }
    }
  });
  for (int t = 0; t < 4; ++t) threads[t].join();
  done = true;
  threads.back().join();
  EXPECT_EQ(failures.load(), 0);
  // Every listed name resolves to the inode listed, with content of the size recorded.
  uint64_t cookie = 0;
  size_t entries = 0;
  while (true) {
    auto page = store->ReadDir(set->ino, cookie, 100);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    for (const DirEntry& e : *page) {
      cookie = e.cookie;
      if (e.name == "." || e.name == "..") continue;
      ++entries;
      auto l = store->Lookup(set->ino, e.name);
      ASSERT_TRUE(l.ok()) << e.name;
      EXPECT_EQ(l->ino, e.attr.ino);
    }
  }
  EXPECT_GT(entries, 0u);
  test::ExpectClean(*store);
}

}  // namespace
}  // namespace kdn

namespace kdn {
namespace {

// Changes committed together (group commit) stay independent: a failing one leaves the others.
TEST(Concurrency, RacingCreatesOfTheSameNamesSucceedOnce) {
  test::TempDir dir("kdn-conc");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 8, kNames = 25;
  std::atomic<int> created{0}, exists{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kNames; ++i) {
        NewNode n;
        n.mode = S_IFREG | 0644;
        n.uid = static_cast<uint32_t>(t);
        auto a = store->MakeNode(kRootIno, "name" + std::to_string(i), n);
        if (a.ok()) {
          ++created;
        } else if (a.status().sys_errno() == EEXIST) {
          ++exists;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), kNames);
  EXPECT_EQ(exists.load(), (kThreads - 1) * kNames);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(store->Usage().inodes, static_cast<uint64_t>(kNames + 1));
  test::ExpectClean(*store);
}

}  // namespace
}  // namespace kdn
