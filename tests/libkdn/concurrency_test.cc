// Several threads loading different caches through one context, and one cache loaded by several
// threads at once.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

TEST(Concurrency, ThreadsShareOneContext) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 4, 32);
  const char* codecs[] = {"raw", "lossless", "q4", "q8+zstd", "q2"};
  const uint32_t n = 160;
  std::vector<std::string> paths;
  for (int i = 0; i < 5; ++i) {
    std::string name = "c0.kv";
    name[1] = static_cast<char>('0' + i);
    paths.push_back(WriteSynthetic(dir, name, m, n, codecs[i], 100 + i));
  }

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 5; ++i) {
    threads.emplace_back([&, i] {
      const size_t block = size_t{n} * m.channels() * 2;
      std::vector<std::vector<std::byte>> k(3, std::vector<std::byte>(block));
      std::vector<std::vector<std::byte>> v(3, std::vector<std::byte>(block));
      std::vector<void*> kb = {k[0].data(), k[1].data(), k[2].data()};
      std::vector<void*> vb = {v[0].data(), v[1].data(), v[2].data()};
      kdn_dest d;
      if (kdn_dest_contiguous(&d, KDN_F16, 3, kb.data(), vb.data(), 4, 32, n) != KDN_OK) ++failures;
      for (int round = 0; round < 4; ++round) {
        kdn_cache* c = nullptr;
        if (kdn_open(ctx.get(), paths[i].c_str(), &c) != KDN_OK) {
          ++failures;
          return;
        }
        if (kdn_load(c, 0, 3, &d, 0, nullptr) != KDN_OK) ++failures;
        for (uint32_t l = 0; l < 3; ++l) {
          if (kdn_layer_wait(c, l) != KDN_OK) ++failures;
        }
        kdn_close(c);
        for (uint32_t l = 0; l < 3; ++l) {
          if (k[l] != Reference(paths[i], l, KvKind::kKey, DType::kF16)) ++failures;
          if (v[l] != Reference(paths[i], l, KvKind::kValue, DType::kF16)) ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(Concurrency, OneCacheManyLoaders) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kGptj, 4, 2, 64);
  const uint32_t n = 120;
  const std::string path = WriteSynthetic(dir, "a.kv", m, n, "q4+zstd", 7);
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_TRUE(c);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      const size_t block = size_t{n} * m.channels() * 4;
      std::vector<std::byte> k(block);
      std::vector<void*> kb(4, nullptr);
      kb[i] = k.data();
      kdn_dest d;
      if (kdn_dest_contiguous(&d, KDN_F32, 4, kb.data(), nullptr, 2, 64, n) != KDN_OK) ++failures;
      for (int round = 0; round < 5; ++round) {
        // Only this thread loads layer i, so kdn_layer_wait(i) waits for this thread's load.
        if (kdn_load(c.get(), static_cast<uint32_t>(i), static_cast<uint32_t>(i) + 1, &d, 0,
                     nullptr) != KDN_OK) {
          ++failures;
        }
        if (kdn_layer_wait(c.get(), static_cast<uint32_t>(i)) != KDN_OK) ++failures;
        if (k != Reference(path, static_cast<uint32_t>(i), KvKind::kKey, DType::kF32)) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(kdn_sync(c.get()), KDN_OK);
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace kdn::test
