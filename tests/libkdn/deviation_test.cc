// Token selection by KV deviation (kdn_select_deviation) against a brute-force reference, its
// tie and ratio rules, and kdn_scatter_rows.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "c_abi_calls.h"
#include "libkdn_test_util.h"
#include "store/format/element_math.h"

namespace kdn::test {
namespace {

// The k largest, ties to the lower index.
std::vector<uint32_t> BruteTopK(const std::vector<double>& dev, uint32_t k) {
  std::vector<uint32_t> idx(dev.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::stable_sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return dev[a] > dev[b]; });
  idx.resize(k);
  return idx;
}

struct DevFixture {
  ModelIdentity m = TestModel(DType::kF32, RopeStyle::kNeox, 2, 2, 16);
  uint32_t cap = 64;
  std::vector<float> cached;  // layer 1 K, contiguous [cap][channels]
  std::vector<float> fresh;
  void* kb[2];
  kdn_dest d;

  explicit DevFixture(uint32_t n, uint64_t seed) {
    const uint32_t ch = m.channels();
    cached.resize(size_t{cap} * ch);
    fresh.resize(size_t{n} * ch);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& x : cached) x = normal(rng);
    kb[0] = nullptr;
    kb[1] = cached.data();
    EXPECT_EQ(kdn_dest_contiguous(&d, KDN_F32, 2, kb, nullptr, m.n_kv_heads, m.head_dim, cap),
              KDN_OK);
  }
};

TEST(Deviation, TopKEqualsBruteForce) {
  CtxPtr ctx = MakeCtx();
  const uint32_t n = 50;
  const uint32_t begin = 9;
  DevFixture f(n, 3);
  const uint32_t ch = f.m.channels();
  std::mt19937_64 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<double> brute(n);
  for (uint32_t t = 0; t < n; ++t) {
    const float scale = 0.01f * static_cast<float>(rng() % 100);
    double acc = 0;
    for (uint32_t c = 0; c < ch; ++c) {
      const float base = f.cached[(begin + t) * ch + c];
      f.fresh[t * ch + c] = base + scale * normal(rng);
      const double diff = static_cast<double>(f.fresh[t * ch + c]) - base;
      acc += diff * diff;
    }
    brute[t] = acc;
  }
  const std::pair<float, uint32_t> ratios[] = {{0.0f, 0},  {0.1f, 5},   {0.15f, 8},
                                               {0.5f, 25}, {0.99f, 50}, {1.0f, 50}};
  for (const auto& [ratio, k] : ratios) {
    SCOPED_TRACE(ratio);
    std::vector<uint32_t> idx(n, 999);
    std::vector<float> dev(n);
    uint32_t count = 12345;
    ASSERT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 1, KDN_K, begin, n, ratio,
                                   idx.data(), &count, dev.data(), nullptr),
              KDN_OK)
        << kdn_last_error();
    ASSERT_EQ(count, k);
    for (uint32_t t = 0; t < n; ++t) ASSERT_NEAR(dev[t], brute[t], 1e-6 * brute[t] + 1e-30) << t;
    idx.resize(count);
    EXPECT_EQ(idx, BruteTopK(brute, k));
  }
}

TEST(Deviation, TiesGoToTheLowerIndexAndCountsRoundSanely) {
  CtxPtr ctx = MakeCtx();
  const uint32_t n = 20;
  DevFixture f(n, 5);
  const uint32_t ch = f.m.channels();
  // Token t deviates by exactly (t % 4) in one channel: four tokens share each value.
  for (uint32_t t = 0; t < n; ++t) {
    for (uint32_t c = 0; c < ch; ++c) f.fresh[t * ch + c] = f.cached[t * ch + c];
    f.fresh[t * ch] = f.cached[t * ch] + static_cast<float>(t % 4);
  }
  std::vector<uint32_t> idx(n);
  uint32_t count = 0;
  ASSERT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 1, KDN_K, 0, n, 0.3f, idx.data(),
                                 &count, nullptr, nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(count, 6u);
  idx.resize(count);
  EXPECT_EQ(idx, (std::vector<uint32_t>{3, 7, 11, 15, 19, 2}));

  // Tiny n: any positive ratio selects at least one; 0 selects none; n = 0 is fine.
  ASSERT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 1, KDN_K, 3, 1, 0.01f, idx.data(),
                                 &count, nullptr, nullptr),
            KDN_OK);
  EXPECT_EQ(count, 1u);
  EXPECT_EQ(idx[0], 0u);
  ASSERT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 1, KDN_K, 3, 1, 0.0f, idx.data(),
                                 &count, nullptr, nullptr),
            KDN_OK);
  EXPECT_EQ(count, 0u);
  ASSERT_EQ(kdn_select_deviation(ctx.get(), nullptr, &f.d, 1, KDN_K, 0, 0, 0.5f, nullptr, &count,
                                 nullptr, nullptr),
            KDN_OK);
  EXPECT_EQ(count, 0u);
  for (float bad : {-0.1f, 1.5f, std::nanf("")}) {
    EXPECT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 1, KDN_K, 0, n, bad, idx.data(),
                                   &count, nullptr, nullptr),
              KDN_E_INVALID_ARG)
        << bad;
  }
  // No V tensor at layer 1; a layer beyond the descriptor; a bad kv.
  EXPECT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 1, KDN_V, 0, n, 0.5f, idx.data(),
                                 &count, nullptr, nullptr),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 2, KDN_K, 0, n, 0.5f, idx.data(),
                                 &count, nullptr, nullptr),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_test_select_deviation_with_kv(ctx.get(), f.fresh.data(), &f.d, 1, 5, n),
            KDN_E_INVALID_ARG);
}

// A NaN in a recomputed row makes that token the first to recompute.
TEST(Deviation, NanCountsAsLargest) {
  CtxPtr ctx = MakeCtx();
  const uint32_t n = 10;
  DevFixture f(n, 6);
  const uint32_t ch = f.m.channels();
  for (uint32_t i = 0; i < n * ch; ++i) f.fresh[i] = f.cached[i] + 0.5f;
  f.fresh[7 * ch + 3] = std::nanf("");
  std::vector<uint32_t> idx(n);
  uint32_t count = 0;
  ASSERT_EQ(kdn_select_deviation(ctx.get(), f.fresh.data(), &f.d, 1, KDN_K, 0, n, 0.1f, idx.data(),
                                 &count, nullptr, nullptr),
            KDN_OK);
  ASSERT_EQ(count, 1u);
  EXPECT_EQ(idx[0], 7u);
}

// fp16 rows in a paged NHD destination: deviation in binary32 of the stored values.
TEST(Deviation, PagedHalf) {
  CtxPtr ctx = MakeCtx();
  const uint32_t heads = 2, dim = 8, bs = 16, n = 40;
  const uint32_t ch = heads * dim;
  std::vector<int32_t> table = {2, 0, 1};
  std::vector<uint16_t> cache(size_t{3} * bs * ch);
  std::vector<uint16_t> fresh(size_t{n} * ch);
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (uint16_t& x : cache) x = elem::FloatToHalf(u(rng));
  for (uint16_t& x : fresh) x = elem::FloatToHalf(u(rng));
  void* kb[1] = {cache.data()};
  kdn_dest d;
  ASSERT_EQ(kdn_dest_paged(&d, KDN_F16, 1, kb, nullptr, heads, dim, bs, 0, table.data(), 3),
            KDN_OK);
  std::vector<double> brute(n);
  for (uint32_t t = 0; t < n; ++t) {
    double acc = 0;
    for (uint32_t c = 0; c < ch; ++c) {
      const size_t at = (size_t{static_cast<uint32_t>(table[t / bs])} * bs + t % bs) * ch + c;
      const double diff =
          static_cast<double>(elem::HalfToFloat(fresh[t * ch + c])) - elem::HalfToFloat(cache[at]);
      acc += diff * diff;
    }
    brute[t] = acc;
  }
  std::vector<uint32_t> idx(n);
  std::vector<float> dev(n);
  uint32_t count = 0;
  ASSERT_EQ(kdn_select_deviation(ctx.get(), fresh.data(), &d, 0, KDN_K, 0, n, 0.25f, idx.data(),
                                 &count, dev.data(), nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(count, 10u);
  for (uint32_t t = 0; t < n; ++t) EXPECT_EQ(dev[t], static_cast<float>(brute[t])) << t;
  idx.resize(count);
  EXPECT_EQ(idx, BruteTopK(brute, count));
}

TEST(Scatter, RowsLandOnTheirTokensOnly) {
  CtxPtr ctx = MakeCtx();
  for (Layout layout : {Layout::kNhd, Layout::kHnd}) {
    const uint32_t heads = 4, dim = 8, bs = 16, blocks = 6;
    const uint32_t ch = heads * dim;
    std::vector<int32_t> table = {5, 3, 1, 0, 2};
    std::vector<std::byte> v = Guarded(size_t{blocks} * bs * ch * 4);
    void* vb[2] = {nullptr, v.data()};
    kdn_dest d;
    ASSERT_EQ(kdn_dest_paged(&d, KDN_F32, 2, nullptr, vb, heads, dim, bs,
                             layout == Layout::kHnd ? 1 : 0, table.data(), 5),
              KDN_OK);
    const std::vector<uint32_t> tokens = {0, 17, 79, 33, 5, 64};
    std::vector<float> rows(tokens.size() * ch);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i) * 0.25f;
    ASSERT_EQ(kdn_scatter_rows(ctx.get(), rows.data(), tokens.data(),
                               static_cast<uint32_t>(tokens.size()), &d, 1, KDN_V, nullptr),
              KDN_OK)
        << kdn_last_error();
    std::vector<std::byte> expected = Guarded(v.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      const uint32_t t = tokens[i];
      for (uint32_t h = 0; h < heads; ++h) {
        const int64_t at = LayoutOffset(layout, heads, dim, bs, table[t / bs], t % bs, h, 0);
        std::memcpy(expected.data() + at * 4, rows.data() + i * ch + h * dim, dim * 4);
      }
    }
    EXPECT_TRUE(v == expected);
    const uint32_t beyond[1] = {80};  // 5 blocks of 16
    EXPECT_EQ(kdn_scatter_rows(ctx.get(), rows.data(), beyond, 1, &d, 1, KDN_V, nullptr),
              KDN_E_INVALID_ARG);
    EXPECT_EQ(kdn_scatter_rows(ctx.get(), rows.data(), tokens.data(), 1, &d, 1, KDN_K, nullptr),
              KDN_E_INVALID_ARG);
    EXPECT_EQ(kdn_scatter_rows(ctx.get(), rows.data(), tokens.data(), 0, &d, 1, KDN_V, nullptr),
              KDN_OK);
  }
}

}  // namespace
}  // namespace kdn::test
