// Sliding-window layers: a load of a layer whose window is shorter than the cache takes only the
// cache's last `window` tokens, at their own destination places, and leaves the destination's
// earlier rows of that layer as they were (kdn.h, kdn_load).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

constexpr uint32_t kTokens = 150;    // more than one tile of every codec, not a multiple of 32
constexpr uint32_t kDestOffset = 7;  // the cache's token 0 goes to destination token 7
constexpr uint32_t kCapacity = kDestOffset + kTokens + 5;

// Layer 0 attends to every token; layer 1 to its last 5 (inside the last tile), layer 2 to its
// last 70 (starting mid quantization group and mid tile), layer 3 to more tokens than the cache
// has (so every token is loaded).
ModelIdentity WindowedModel() {
  ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kNeox, 4, 2, 16);
  m.layer_windows = {0, 5, 70, 4096};
  return m;
}

// A contiguous host destination of every layer, filled with guard bytes.
struct HostDest {
  std::vector<std::vector<std::byte>> k, v;
  std::vector<void*> kp, vp;
  kdn_dest dest{};
  size_t row_bytes;
  HostDest(const ModelIdentity& m, kdn_dtype dtype)
      : row_bytes(size_t{m.channels()} * ElemBytes(dtype)) {
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      k.push_back(Guarded(kCapacity * row_bytes));
      v.push_back(Guarded(kCapacity * row_bytes));
    }
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      kp.push_back(k[l].data());
      vp.push_back(v[l].data());
    }
    EXPECT_EQ(kdn_dest_contiguous(&dest, dtype, m.n_layers, kp.data(), vp.data(), m.n_kv_heads,
                                  m.head_dim, kCapacity),
              KDN_OK);
  }
  const std::byte* row(uint32_t l, KvKind kind, uint32_t slot) const {
    return (kind == KvKind::kKey ? k : v)[l].data() + slot * row_bytes;
  }
};

bool IsGuard(const std::byte* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != kGuard) return false;
  }
  return true;
}

// Against `full` (the same tensors loaded from a file without windows): every layer's rows inside
// its window equal the full load's, every other destination row is untouched.
void ExpectWindowsOf(const ModelIdentity& m, const HostDest& got, const HostDest& full) {
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    const uint32_t w = m.layer_windows[l];
    const uint32_t first = w != 0 && w < kTokens ? kTokens - w : 0;
    for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
      for (uint32_t slot = 0; slot < kCapacity; ++slot) {
        const bool loaded = slot >= kDestOffset + first && slot < kDestOffset + kTokens;
        if (loaded) {
          ASSERT_EQ(std::memcmp(got.row(l, kind, slot), full.row(l, kind, slot), got.row_bytes), 0)
              << "layer " << l << (kind == KvKind::kKey ? " K" : " V") << " slot " << slot;
        } else {
          ASSERT_TRUE(IsGuard(got.row(l, kind, slot), got.row_bytes))
              << "layer " << l << (kind == KvKind::kKey ? " K" : " V") << " slot " << slot
              << " was written";
        }
      }
    }
  }
}

class SlidingWindow : public ::testing::TestWithParam<const char*> {};

TEST_P(SlidingWindow, ALayerLoadsOnlyItsWindow) {
  const ModelIdentity m = WindowedModel();
  ModelIdentity plain = m;
  plain.layer_windows.clear();
  TempDir dir("kdn-window");
  // Same seed: the same tensors, with and without windows in the identity.
  const std::string windowed = WriteSynthetic(dir, "w.kv", m, kTokens, GetParam(), 3);
  const std::string whole = WriteSynthetic(dir, "p.kv", plain, kTokens, GetParam(), 3);
  CtxPtr ctx = MakeCtx();
  CachePtr cw = OpenCache(ctx.get(), windowed);
  CachePtr cp = OpenCache(ctx.get(), whole);
  ASSERT_NE(cw, nullptr);
  ASSERT_NE(cp, nullptr);

  uint32_t window = 1, first = 1;
  ASSERT_EQ(kdn_layer_window(cw.get(), 2, &window, &first), KDN_OK) << kdn_last_error();
  EXPECT_EQ(window, 70u);
  EXPECT_EQ(first, kTokens - 70);
  ASSERT_EQ(kdn_layer_window(cw.get(), 3, &window, &first), KDN_OK);
  EXPECT_EQ(window, 4096u);
  EXPECT_EQ(first, 0u);
  ASSERT_EQ(kdn_layer_window(cp.get(), 1, &window, nullptr), KDN_OK);
  EXPECT_EQ(window, 0u);
  EXPECT_EQ(kdn_layer_window(cw.get(), 4, &window, &first), KDN_E_INVALID_ARG);

  for (kdn_dtype dtype : {KDN_BF16, KDN_F32}) {
    SCOPED_TRACE(dtype == KDN_BF16 ? "bf16" : "fp32");
    HostDest full(m, dtype), got(m, dtype);
    ASSERT_EQ(kdn_load(cp.get(), 0, m.n_layers, &full.dest, kDestOffset, nullptr), KDN_OK)
        << kdn_last_error();
    ASSERT_EQ(kdn_load(cw.get(), 0, m.n_layers, &got.dest, kDestOffset, nullptr), KDN_OK)
        << kdn_last_error();
    ASSERT_EQ(kdn_sync(cp.get()), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(cw.get()), KDN_OK) << kdn_last_error();
    ExpectWindowsOf(m, got, full);
  }

  // Blending re-rotates the window's keys exactly as it does the whole file's.
  const kdn_model_desc desc = ToDesc(m);
  HostDest full(m, KDN_F32), got(m, KDN_F32);
  const uint32_t offsets[1] = {kDestOffset};
  kdn_cache* whole_caches[1] = {cp.get()};
  kdn_cache* windowed_caches[1] = {cw.get()};
  ASSERT_EQ(kdn_blend_load(whole_caches, 1, offsets, 1000, &desc, 0, m.n_layers, &full.dest,
                           nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(kdn_blend_load(windowed_caches, 1, offsets, 1000, &desc, 0, m.n_layers, &got.dest,
                           nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(kdn_sync(cp.get()), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(cw.get()), KDN_OK) << kdn_last_error();
  ExpectWindowsOf(m, got, full);
}

INSTANTIATE_TEST_SUITE_P(Codecs, SlidingWindow,
                         ::testing::Values("raw", "lossless", "q8", "q4+zstd", "q2:g64", "tc",
                                           "lossless:entropy=rans"));

// A windowed cache is another identity: its prefix hashes are not the plain model's, so a prefix
// lookup with the plain descriptor (which cannot state windows) never answers it.
TEST(SlidingWindowIdentity, PrefixHashesDifferFromThePlainModels) {
  const ModelIdentity m = WindowedModel();
  TempDir dir("kdn-window");
  const std::string path = WriteSynthetic(dir, "w.kv", m, kTokens, "raw", 3);
  CtxPtr ctx = MakeCtx();
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_NE(c, nullptr);
  const kdn_model_desc desc = ToDesc(m);
  const std::vector<uint32_t> tokens = HeaderOf(path).tokens;
  std::vector<char> plain_hex(KDN_PREFIX_HASH_HEX_BYTES), file_hex(KDN_PREFIX_HASH_HEX_BYTES);
  uint32_t n = 0;
  ASSERT_EQ(kdn_prefix_hashes(&desc, tokens.data(), kTokens, 1000, plain_hex.data(), 1, &n), KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(kdn_cache_prefix_hashes(c.get(), file_hex.data(), 1, &n, nullptr), KDN_OK)
      << kdn_last_error();
  EXPECT_STRNE(plain_hex.data(), file_hex.data());
}

}  // namespace
}  // namespace kdn::test
