// Checkpoint loading (every header field and the size checked), synthetic shapes, tokenization.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "kdn-engine/model.h"
#include "kdn-engine/tokenizer.h"
#include "test_util.h"

namespace kdn::engine {
namespace {

ModelConfig TinyConfig() {
  return ModelConfig{16, 40, 2, 4, 2, 300, 64};
}

// Writes `model`'s weights as a llama2.c checkpoint (unshared classifier when asked).
void WriteCheckpoint(const std::string& path, const Model& model, bool unshared,
                     int64_t size_delta = 0) {
  const ModelConfig& c = model.config();
  std::ofstream f(path, std::ios::binary);
  int32_t h[7] = {int32_t(c.dim),        int32_t(c.hidden_dim),
                  int32_t(c.n_layers),   int32_t(c.n_heads),
                  int32_t(c.n_kv_heads), unshared ? -int32_t(c.vocab_size) : int32_t(c.vocab_size),
                  int32_t(c.seq_len)};
  f.write(reinterpret_cast<const char*>(h), sizeof h);
  ModelConfig shared = c;
  shared.shared_classifier = true;
  // A synthetic model's tensors are contiguous, in checkpoint order, from the token embedding.
  std::vector<float> all(model.token_embedding(),
                         model.token_embedding() + shared.checkpoint_floats());
  if (unshared) {
    for (uint32_t i = 0; i < c.vocab_size * c.dim; ++i) all.push_back(float(i % 7) * 0.5f);
  }
  if (size_delta < 0) all.resize(all.size() + size_delta);
  if (size_delta > 0) all.resize(all.size() + size_delta, 0.0f);
  f.write(reinterpret_cast<const char*>(all.data()), all.size() * sizeof(float));
}

TEST(ModelTest, LoadsWhatWasWrittenSharedAndUnshared) {
  test::TempDir dir("kdn-engine-model");
  auto synth = Model::Synthetic(TinyConfig(), 7);
  ASSERT_TRUE(synth.ok()) << synth.status().ToString();
  for (bool unshared : {false, true}) {
    const std::string path = dir / (unshared ? "unshared.bin" : "tiny.bin");
    WriteCheckpoint(path, **synth, unshared);
    auto loaded = Model::Load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    const Model& m = **loaded;
    EXPECT_EQ(unshared ? "unshared" : "tiny", m.name());
    EXPECT_EQ(!unshared, m.config().shared_classifier);
    const ModelConfig& c = m.config();
    EXPECT_EQ(
        0, std::memcmp(m.layer(1).w2, (*synth)->layer(1).w2, sizeof(float) * c.dim * c.hidden_dim));
    EXPECT_EQ(0, std::memcmp(m.rms_final(), (*synth)->rms_final(), sizeof(float) * c.dim));
    if (unshared) {
      EXPECT_NE(m.classifier(), m.token_embedding());
      EXPECT_EQ(3.0f, m.classifier()[6]);  // (6 % 7) * 0.5
    } else {
      EXPECT_EQ(m.classifier(), m.token_embedding());
    }
  }
}

TEST(ModelTest, RejectsBadFiles) {
  test::TempDir dir("kdn-engine-model");
  auto synth = Model::Synthetic(TinyConfig(), 7);
  ASSERT_TRUE(synth.ok());
  WriteCheckpoint(dir / "short.bin", **synth, false, -1);
  WriteCheckpoint(dir / "long.bin", **synth, false, +1);
  EXPECT_FALSE(Model::Load(dir / "short.bin").ok());
  EXPECT_FALSE(Model::Load(dir / "long.bin").ok());
  EXPECT_TRUE(Model::Load(dir / "missing.bin").status().IsNotFound());
  {
    std::ofstream f(dir / "tiny-header.bin", std::ios::binary);
    f << "abc";
  }
  EXPECT_FALSE(Model::Load(dir / "tiny-header.bin").ok());
  // Header fields that would make the reader index out of bounds.
  const int32_t bad_headers[][7] = {
      {0, 40, 2, 4, 2, 300, 64},       {16, 40, 2, 3, 2, 300, 64},   // dim % heads
      {16, 40, 2, 4, 3, 300, 64},      {16, 40, 2, 4, 2, 100, 64},   // kv heads, tiny vocab
      {16, 40, -2, 4, 2, 300, 64},     {16, 40, 2, 16, 2, 300, 64},  // odd head_dim (1)
      {1 << 30, 40, 2, 4, 2, 300, 64}, {16, 40, 2, 4, 2, INT32_MIN, 64}};
  for (const auto& h : bad_headers) {
    const std::string path = dir / "bad.bin";
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(h), sizeof h);
    std::vector<float> zeros(100000, 0.0f);
    f.write(reinterpret_cast<const char*>(zeros.data()), zeros.size() * sizeof(float));
    f.close();
    auto r = Model::Load(path);
    EXPECT_FALSE(r.ok()) << "header {" << h[0] << ", " << h[1] << ", " << h[2] << ", " << h[3]
                         << ", " << h[4] << ", " << h[5] << ", " << h[6] << "} was accepted";
  }
}

TEST(ModelTest, SyntheticWeightsAreDeterministicPerSeed) {
  auto a = Model::Synthetic(TinyConfig(), 1), b = Model::Synthetic(TinyConfig(), 1),
       c = Model::Synthetic(TinyConfig(), 2);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const size_t n = TinyConfig().checkpoint_floats();
  EXPECT_EQ(0, std::memcmp((*a)->token_embedding(), (*b)->token_embedding(), n * sizeof(float)));
  EXPECT_NE(0, std::memcmp((*a)->token_embedding(), (*c)->token_embedding(), n * sizeof(float)));
  EXPECT_EQ((*a)->name(), (*b)->name());
  EXPECT_NE((*a)->name(), (*c)->name());
  // Known values pin the generator, so a synthetic shape means the same weights everywhere.
  EXPECT_FLOAT_EQ(1.0f, (*a)->layer(0).rms_att[3]);
  for (size_t i = 0; i < 64; ++i) {
    const float w = (*a)->layer(1).wq[i];
    EXPECT_LE(std::abs(w), std::sqrt(3.0f / 16)) << i;
  }
}

TEST(ModelTest, ParsesSyntheticShapes) {
  auto s = ParseSyntheticShape("dim=1024,layers=8,kv_heads=8");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(1024u, s->dim);
  EXPECT_EQ(8u, s->n_layers);
  EXPECT_EQ(8u, s->n_heads);
  EXPECT_EQ(8u, s->n_kv_heads);
  EXPECT_EQ(128u, s->head_dim());
  EXPECT_EQ(2752u, s->hidden_dim);  // 8/3 * 1024 rounded up to a multiple of 32
  auto tiny = ParseSyntheticShape("stories260K");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(64u, tiny->dim);
  EXPECT_EQ(172u, tiny->hidden_dim);
  EXPECT_EQ(4u, tiny->n_kv_heads);
  for (const char* bad : {"", "dim", "dim=0", "dim=64,bogus=1", "dim=64,heads=3", "dim=x",
                          "dim=64,kv_heads=3", "dim=64,vocab=10"}) {
    EXPECT_FALSE(ParseSyntheticShape(bad).ok()) << bad;
  }
}

TEST(TokenizerTest, BytesBecomeTokensAndBack) {
  const std::vector<uint32_t> t = Tokenize("Hi\n\xff", true);
  EXPECT_EQ((std::vector<uint32_t>{kBos, 'H' + 3u, 'i' + 3u, '\n' + 3u, 255 + 3u}), t);
  EXPECT_EQ((std::vector<uint32_t>{'a' + 3u}), Tokenize("a", false));
  EXPECT_TRUE(Tokenize("", false).empty());
  EXPECT_EQ("<1>Hi\n\xff", Detokenize(t));
  EXPECT_EQ("<259><0><2>", Detokenize(std::vector<uint32_t>{259, 0, 2}));
}

}  // namespace
}  // namespace kdn::engine
