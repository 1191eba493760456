// Paged destinations: every decoded row lands where the layout says, nothing else is touched.
// The expected buffer is built from the reference decode and the layouts as libkdn_test_util.h
// states them (independently of the library's addressing code).
#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

// (layout, block size, slot mapping instead of a block table)
class PagedLayouts : public ::testing::TestWithParam<std::tuple<Layout, uint32_t, bool>> {};

TEST_P(PagedLayouts, EveryRowInItsPlaceAndNothingElseTouched) {
  const auto [layout, block_size, use_slots] = GetParam();
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 4, 32);
  const uint32_t n_tokens = 150;
  const uint32_t offset = 37;  // destination tokens [37, 187)
  const uint32_t heads = m.n_kv_heads;
  const uint32_t dim = m.head_dim;
  const std::string path = WriteSynthetic(dir, "a.kv", m, n_tokens, "q4", 31);
  std::mt19937_64 rng(block_size * 7 + (use_slots ? 1 : 0) + static_cast<int>(layout));

  const uint32_t end_token = offset + n_tokens;
  const uint32_t n_logical = (end_token + block_size - 1) / block_size;
  const uint32_t n_phys = n_logical + 6;  // spare blocks must stay untouched
  std::vector<int32_t> table(n_logical);
  std::vector<int32_t> perm(n_phys);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::copy_n(perm.begin(), n_logical, table.begin());
  // Slot mapping: distinct random slots over all physical blocks, some tokens skipped (-1).
  std::vector<int64_t> slots(end_token, -1);
  std::vector<int64_t> free_slots(size_t{n_phys} * block_size);
  std::iota(free_slots.begin(), free_slots.end(), 0);
  std::shuffle(free_slots.begin(), free_slots.end(), rng);
  for (uint32_t t = 0; t < end_token; ++t) slots[t] = (rng() % 10 == 0) ? -1 : free_slots[t];

  for (DType out : {DType::kF16, DType::kF32}) {
    SCOPED_TRACE(std::string(DTypeName(out)));
    const size_t esize = DTypeSize(out);
    const size_t layer_bytes = size_t{n_phys} * block_size * heads * dim * esize;
    std::vector<std::vector<std::byte>> k(m.n_layers, Guarded(layer_bytes));
    std::vector<std::vector<std::byte>> v(m.n_layers, Guarded(layer_bytes));
    std::vector<void*> kb;
    std::vector<void*> vb;
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      kb.push_back(k[l].data());
      vb.push_back(v[l].data());
    }
    kdn_dest d;
    ASSERT_EQ(
        kdn_dest_paged(&d, static_cast<kdn_dtype>(out), m.n_layers, kb.data(), vb.data(), heads,
                       dim, block_size, layout == Layout::kHnd ? 1 : 0, table.data(), n_logical),
        KDN_OK);
    if (use_slots) {
      d.slot_mapping = slots.data();
      d.n_slots = end_token;
      d.capacity_tokens = end_token;
    }
    CachePtr c = OpenCache(ctx.get(), path);
    ASSERT_EQ(kdn_load(c.get(), 1, 3, &d, offset, nullptr), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();

    for (uint32_t l = 0; l < m.n_layers; ++l) {
      for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
        std::vector<std::byte> expected = Guarded(layer_bytes);
        if (l >= 1) {
          const std::vector<std::byte> ref = Reference(path, l, kind, out);
          for (uint32_t t = 0; t < n_tokens; ++t) {
            const uint32_t dt = offset + t;
            int64_t phys;
            uint32_t in_block;
            if (use_slots) {
              if (slots[dt] < 0) continue;
              phys = slots[dt] / block_size;
              in_block = static_cast<uint32_t>(slots[dt] % block_size);
            } else {
              phys = table[dt / block_size];
              in_block = dt % block_size;
            }
            for (uint32_t h = 0; h < heads; ++h) {
              const int64_t at = LayoutOffset(layout, heads, dim, block_size, phys, in_block, h, 0);
              std::memcpy(expected.data() + at * esize,
                          ref.data() + ((size_t{t} * heads + h) * dim) * esize, dim * esize);
            }
          }
        }
        const std::vector<std::byte>& got = kind == KvKind::kKey ? k[l] : v[l];
        EXPECT_TRUE(got == expected) << "layer " << l << (kind == KvKind::kKey ? " K" : " V");
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, PagedLayouts,
                         ::testing::Combine(::testing::Values(Layout::kNhd, Layout::kHnd),
                                            ::testing::Values(16u, 32u), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == Layout::kNhd ? "NHD"
                                                                                      : "HND") +
                                  "_bs" + std::to_string(std::get<1>(info.param)) +
                                  (std::get<2>(info.param) ? "_slots" : "_table");
                         });

// A contiguous destination at a token offset: rows [offset, offset + n) and nothing else.
TEST(Layouts, ContiguousAtTokenOffset) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kGptj, 2, 2, 16);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 45, "lossless", 2);
  const uint32_t cap = 100;
  const uint32_t offset = 50;
  const size_t row = size_t{m.channels()} * 2;
  std::vector<std::byte> k0 = Guarded(cap * row);
  void* kb[2] = {k0.data(), nullptr};
  kdn_dest d;
  ASSERT_EQ(kdn_dest_contiguous(&d, KDN_BF16, 2, kb, nullptr, m.n_kv_heads, m.head_dim, cap),
            KDN_OK);
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_EQ(kdn_load(c.get(), 0, 2, &d, offset, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_layer_wait(c.get(), 0), KDN_OK) << kdn_last_error();
  std::vector<std::byte> expected = Guarded(cap * row);
  const std::vector<std::byte> ref = Reference(path, 0, KvKind::kKey, DType::kBF16);
  std::memcpy(expected.data() + offset * row, ref.data(), ref.size());
  EXPECT_TRUE(k0 == expected);
  EXPECT_EQ(kdn_load(c.get(), 0, 2, &d, 56, nullptr), KDN_E_INVALID_ARG);  // 56 + 45 > 100
}

// A destination with padded rows and heads (strides larger than the data): the padding stays.
TEST(Layouts, PaddedStrides) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF32, RopeStyle::kNeox, 1, 3, 8);
  const uint32_t n = 20;
  const std::string path = WriteSynthetic(dir, "a.kv", m, n, "q8", 6);
  const int64_t head_stride = 11;
  const int64_t block_stride = 40;  // 3 heads * 11 = 33, padded to 40
  std::vector<std::byte> k = Guarded(size_t{n} * block_stride * 4);
  void* kb[1] = {k.data()};
  kdn_dest d;
  ASSERT_EQ(kdn_dest_contiguous(&d, KDN_F32, 1, kb, nullptr, 3, 8, n), KDN_OK);
  d.block_stride = block_stride;
  d.head_stride = head_stride;
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_EQ(kdn_load(c.get(), 0, 1, &d, 0, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(c.get()), KDN_OK);
  std::vector<std::byte> expected = Guarded(k.size());
  const std::vector<std::byte> ref = Reference(path, 0, KvKind::kKey, DType::kF32);
  for (uint32_t t = 0; t < n; ++t) {
    for (uint32_t h = 0; h < 3; ++h) {
      std::memcpy(expected.data() + (t * block_stride + h * head_stride) * 4,
                  ref.data() + (t * 24 + h * 8) * 4, 32);
    }
  }
  EXPECT_TRUE(k == expected);
}

}  // namespace
}  // namespace kdn::test
