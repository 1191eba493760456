// MLA caches through the engine library: one latent vector per token and layer ([tokens]
// [kv_lora_rank + rope_dim], loaded through the K tensors of a destination of one head), round
// trips bit for bit for lossless codecs; blending re-rotates only the trailing rope_dim channels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

constexpr uint32_t kTokens = 90;
constexpr uint32_t kRank = 32;
constexpr uint32_t kRope = 8;
constexpr uint32_t kDim = kRank + kRope;

ModelIdentity MlaModel() {
  ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kGptj, 3, 1, kDim, kRope);
  m.name = "mla-engine-test";
  m.attention = AttentionKind::kMla;
  m.kv_lora_rank = kRank;
  return m;
}

// A contiguous destination of latents (K tensors only), guard-filled.
struct Latents {
  std::vector<std::vector<std::byte>> k;
  std::vector<void*> kp, vp;
  kdn_dest dest{};
  size_t row_bytes;
  Latents(const ModelIdentity& m, kdn_dtype dtype, uint32_t capacity, bool with_v = false)
      : row_bytes(size_t{kDim} * ElemBytes(dtype)) {
    for (uint32_t l = 0; l < m.n_layers; ++l) k.push_back(Guarded(capacity * row_bytes));
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      kp.push_back(k[l].data());
      vp.push_back(with_v ? k[l].data() : nullptr);
    }
    EXPECT_EQ(kdn_dest_contiguous(&dest, dtype, m.n_layers, kp.data(), vp.data(), 1, kDim,
                                  capacity),
              KDN_OK);
  }
  float at(uint32_t l, uint32_t t, uint32_t c) const {
    float f;
    std::memcpy(&f, k[l].data() + t * row_bytes + c * 4, 4);
    return f;
  }
};

class MlaLoad : public ::testing::TestWithParam<const char*> {};

TEST_P(MlaLoad, SaveOpenLoadEqualsTheInput) {
  const std::string codec = GetParam();
  const ModelIdentity m = MlaModel();
  TempDir dir("kdn-mla");
  const std::string path = WriteSynthetic(dir, "a.kv", m, kTokens, codec, 4);
  CtxPtr ctx = MakeCtx();
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_NE(c, nullptr);
  uint32_t rank = 0;
  ASSERT_EQ(kdn_cache_mla(c.get(), &rank), KDN_OK) << kdn_last_error();
  EXPECT_EQ(rank, kRank);
  kdn_cache_info info;
  ASSERT_EQ(kdn_info(c.get(), &info), KDN_OK);
  EXPECT_EQ(info.model.n_kv_heads, 1u);
  EXPECT_EQ(info.model.head_dim, kDim);
  EXPECT_EQ(info.decoded_bytes, uint64_t{m.n_layers} * kTokens * kDim * 2);  // latents only

  Latents got(m, KDN_BF16, kTokens);
  ASSERT_EQ(kdn_load(c.get(), 0, m.n_layers, &got.dest, 0, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();
  const size_t bytes = size_t{kTokens} * kDim * 2;
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    std::vector<std::byte> input(bytes);
    ASSERT_TRUE(SynthesizeLayerKv(m, kTokens, l, 4, input, {}).ok());
    if (codec == "raw" || codec == "lossless") {
      EXPECT_EQ(got.k[l], input) << "layer " << l;  // bit for bit
    } else {
      EXPECT_EQ(got.k[l], Reference(path, l, KvKind::kKey, DType::kBF16)) << "layer " << l;
    }
  }

  // Destinations with V tensors are refused: an MLA cache has none to give them.
  Latents with_v(m, KDN_BF16, kTokens, true);
  EXPECT_EQ(kdn_load(c.get(), 0, m.n_layers, &with_v.dest, 0, nullptr), KDN_E_INVALID_ARG);
  EXPECT_NE(std::string(kdn_last_error()).find("MLA"), std::string::npos) << kdn_last_error();
}

INSTANTIATE_TEST_SUITE_P(Codecs, MlaLoad,
                         ::testing::Values("raw", "lossless", "q8", "q4", "q4+zstd", "q2:g64",
                                           "lossless:entropy=rans"));

// Blending: the latent channels land as a plain load writes them; the rope channels are rotated
// from their stored positions to their new ones (GPT-J pairs within [kRank, kDim)), as
// kdn_rope_shift_mla rotates a plain load and as the rotation computes in double precision.
TEST(MlaBlend, RotatesOnlyTheRopeChannels) {
  const ModelIdentity m = MlaModel();
  TempDir dir("kdn-mla");
  const std::string path = WriteSynthetic(dir, "a.kv", m, kTokens, "lossless", 6, 11);
  CtxPtr ctx = MakeCtx();
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_NE(c, nullptr);
  constexpr uint32_t kOffset = 5, kBase = 300, kCap = kOffset + kTokens;
  const int64_t delta = int64_t{kBase} + kOffset - 11;

  Latents plain(m, KDN_F32, kCap), blended(m, KDN_F32, kCap), shifted(m, KDN_F32, kCap);
  ASSERT_EQ(kdn_load(c.get(), 0, m.n_layers, &plain.dest, kOffset, nullptr), KDN_OK);
  ASSERT_EQ(kdn_load(c.get(), 0, m.n_layers, &shifted.dest, kOffset, nullptr), KDN_OK);
  kdn_cache* caches[1] = {c.get()};
  const uint32_t offsets[1] = {kOffset};
  const kdn_model_desc desc = ToDesc(m);
  ASSERT_EQ(kdn_blend_load(caches, 1, offsets, kBase, &desc, 0, m.n_layers, &blended.dest,
                           nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_rope_shift_mla(ctx.get(), &desc, kRank, &shifted.dest, 0, m.n_layers, kOffset,
                               kTokens, delta, nullptr),
            KDN_OK)
      << kdn_last_error();
  // kdn_rope_shift with the plain descriptor would rotate the leading channels: the MLA call is
  // the one that knows where the rope part is.
  size_t rotated = 0;
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    EXPECT_EQ(blended.k[l], shifted.k[l]) << "layer " << l;
    for (uint32_t t = kOffset; t < kCap; ++t) {
      for (uint32_t ch = 0; ch < kRank; ++ch) {
        ASSERT_EQ(blended.at(l, t, ch), plain.at(l, t, ch))
            << "latent channel " << ch << " of token " << t << " layer " << l << " changed";
      }
      for (uint32_t i = 0; i < kRope / 2; ++i) {
        const uint32_t a = kRank + 2 * i, b = a + 1;
        const double angle =
            double(delta) * std::pow(double(m.rope_theta), -2.0 * i / double(kRope));
        const double x = plain.at(l, t, a), y = plain.at(l, t, b);
        const double xr = x * std::cos(angle) - y * std::sin(angle);
        const double yr = x * std::sin(angle) + y * std::cos(angle);
        ASSERT_NEAR(blended.at(l, t, a), xr, 1e-4 * (1 + std::abs(xr))) << "token " << t;
        ASSERT_NEAR(blended.at(l, t, b), yr, 1e-4 * (1 + std::abs(yr))) << "token " << t;
        if (blended.at(l, t, a) != plain.at(l, t, a)) ++rotated;
      }
    }
  }
  EXPECT_GT(rotated, size_t{m.n_layers} * kTokens);  // the rope part did move
}

TEST(MlaArgs, RopeShiftMlaChecksTheShape) {
  const ModelIdentity m = MlaModel();
  CtxPtr ctx = MakeCtx();
  Latents d(m, KDN_F32, 4);
  const kdn_model_desc desc = ToDesc(m);
  EXPECT_EQ(kdn_rope_shift_mla(ctx.get(), &desc, kRank + 2, &d.dest, 0, 1, 0, 4, 3, nullptr),
            KDN_E_INVALID_ARG);  // rank + rotary_dim != head_dim
  EXPECT_EQ(kdn_rope_shift_mla(ctx.get(), &desc, 0, &d.dest, 0, 1, 0, 4, 3, nullptr),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_rope_shift_mla(ctx.get(), &desc, kRank, &d.dest, 0, 1, 0, 4, 3, nullptr), KDN_OK)
      << kdn_last_error();
  // A non-MLA cache says rank 0.
  TempDir dir("kdn-mla");
  const std::string path =
      WriteSynthetic(dir, "p.kv", TestModel(DType::kF16), 8, "raw", 1);
  CachePtr c = OpenCache(ctx.get(), path);
  uint32_t rank = 7;
  ASSERT_EQ(kdn_cache_mla(c.get(), &rank), KDN_OK);
  EXPECT_EQ(rank, 0u);
}

}  // namespace
}  // namespace kdn::test
