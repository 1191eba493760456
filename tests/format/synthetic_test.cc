// Synthetic caches: deterministic bytes (pinned by hash, so that a change anywhere shows), shapes
// and value ranges that look like KV, complete files that verify.
#include "format_test_util.h"

namespace kdn {
namespace {

TEST(SyntheticTest, TokensAreDeterministicAndInRange) {
  const auto a = SynthesizeTokens(1000, 5, 512);
  EXPECT_EQ(a, SynthesizeTokens(1000, 5, 512));
  EXPECT_NE(a, SynthesizeTokens(1000, 6, 512));
  for (uint32_t t : a) {
    EXPECT_GE(t, 3u);
    EXPECT_LT(t, 512u);
  }
  EXPECT_EQ(SynthesizeTokens(0, 1).size(), 0u);
}

TEST(SyntheticTest, LayersAreDeterministicAndDistinct) {
  const ModelIdentity m = *ModelPreset("tiny");
  const size_t bytes = 64 * m.channels() * DTypeSize(m.dtype);
  std::vector<std::byte> k(bytes), v(bytes), k2(bytes), v2(bytes);
  ASSERT_TRUE(SynthesizeLayerKv(m, 64, 1, 9, k, v).ok());
  ASSERT_TRUE(SynthesizeLayerKv(m, 64, 1, 9, k2, v2).ok());
  EXPECT_EQ(k, k2);
  EXPECT_EQ(v, v2);
  EXPECT_NE(k, v);
  ASSERT_TRUE(SynthesizeLayerKv(m, 64, 2, 9, k2, v2).ok());
  EXPECT_NE(k, k2);
  ASSERT_TRUE(SynthesizeLayerKv(m, 64, 1, 10, k2, v2).ok());
  EXPECT_NE(k, k2);
  // Same bytes on every machine: pinned. (A deliberate change of the generator updates these.)
  const ModelIdentity l8 = *ModelPreset("llama3-8b");
  std::vector<std::byte> lk(3 * l8.channels() * 2), lv(lk.size());
  ASSERT_TRUE(SynthesizeLayerKv(l8, 3, 0, 1, lk, lv).ok());
  EXPECT_EQ(HashBytes64(k.data(), k.size()), 0xb3dfb4435115880cull)
      << std::hex << HashBytes64(k.data(), k.size());
  EXPECT_EQ(HashBytes64(lv.data(), lv.size()), 0x20a3dbd948bd4207ull)
      << std::hex << HashBytes64(lv.data(), lv.size());
}

TEST(SyntheticTest, ValuesLookLikeKv) {
  const ModelIdentity m = *ModelPreset("llama3-8b");
  const uint32_t tokens = 128;
  std::vector<std::byte> k(size_t{tokens} * m.channels() * 2), v(k.size());
  ASSERT_TRUE(SynthesizeLayerKv(m, tokens, 3, 1, k, v).ok());
  float kmax = 0, vmax = 0;
  double ksum2 = 0;
  for (size_t i = 0; i < size_t{tokens} * m.channels(); ++i) {
    const float x = test::LoadAsFloat(k.data(), DType::kBF16, i);
    const float y = test::LoadAsFloat(v.data(), DType::kBF16, i);
    ASSERT_TRUE(std::isfinite(x) && std::isfinite(y));
    kmax = std::max(kmax, std::fabs(x));
    vmax = std::max(vmax, std::fabs(y));
    ksum2 += double(x) * x;
  }
  const double krms = std::sqrt(ksum2 / (double(tokens) * m.channels()));
  EXPECT_GT(kmax, 4 * krms) << "K has outlier channels";
  EXPECT_LT(vmax, 4.0f);
  EXPECT_GT(krms, 0.1);
}

TEST(SyntheticTest, BadArguments) {
  const ModelIdentity m = test::SmallModel();
  std::vector<std::byte> k(10), v(10);
  EXPECT_FALSE(SynthesizeLayerKv(m, 4, 0, 1, k, v).ok());  // sizes
  EXPECT_FALSE(SynthesizeLayerKv(m, 0, 0, 1, k, v).ok());  // tokens
  k.resize(4 * 16 * 2);
  v.resize(k.size());
  EXPECT_FALSE(SynthesizeLayerKv(m, 4, 2, 1, k, v).ok());  // layer
  EXPECT_TRUE(SynthesizeLayerKv(m, 4, 1, 1, k, v).ok());
  ModelIdentity bad = m;
  bad.n_layers = 0;
  EXPECT_FALSE(SynthesizeLayerKv(bad, 4, 0, 1, k, v).ok());
  EXPECT_FALSE(SynthesizeKvFile(bad, 4, CodecSpec{}, 1).ok());
  EXPECT_FALSE(SynthesizeKvFile(m, 0, CodecSpec{}, 1).ok());
}

TEST(SyntheticTest, FilesVerifyAndHoldTheLayers) {
  const ModelIdentity m = *ModelPreset("tiny");
  const auto f = test::MakeFile(m, 300, "raw", 4, /*position=*/17);
  auto r = KvReader::Open(MemorySource(f));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->VerifyAll().ok());
  const KvHeader& h = (*r)->header();
  EXPECT_EQ(h.tokens, SynthesizeTokens(300, 4));
  EXPECT_EQ(h.position_offset, 17u);
  EXPECT_EQ(h.model.name, "stories260K");
  const size_t bytes = 300 * m.channels() * 4;
  std::vector<std::byte> k(bytes), v(bytes), out(bytes);
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    ASSERT_TRUE(SynthesizeLayerKv(m, 300, l, 4, k, v).ok());
    ASSERT_TRUE((*r)->DecodeBlock(l, KvKind::kKey, DType::kF32, out).ok());
    EXPECT_EQ(out, k) << l;
    ASSERT_TRUE((*r)->DecodeBlock(l, KvKind::kValue, DType::kF32, out).ok());
    EXPECT_EQ(out, v) << l;
  }
}

}  // namespace
}  // namespace kdn
