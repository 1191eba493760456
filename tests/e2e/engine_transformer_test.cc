// The forward pass on tiny random models: incremental decoding equals full recompute, paged and
// contiguous KV agree exactly, thread count and batch composition never change a bit, RoPE
// composes, and synthetic shapes are deterministic.
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "kdn-engine/kernels.h"
#include "kdn-engine/model.h"
#include "kdn-engine/session.h"
#include "kdn-engine/thread_pool.h"
#include "kdn-engine/transformer.h"
#include "reference_llama.h"
#include "test_util.h"

namespace kdn::engine {
namespace {

// GQA (2 query heads per KV head), head_dim 8, dims with ragged tails for the kernels.
ModelConfig Shape() {
  return ModelConfig{32, 52, 3, 4, 2, 300, 256};
}

std::vector<uint32_t> Tokens(size_t n, uint64_t seed) {
  auto rng = test::Rng(seed);
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = 1 + static_cast<uint32_t>(rng() % 299);
  return t;
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class TransformerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = Model::Synthetic(Shape(), 11);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
  }
  // Logits of every token of `tokens`, prefilled in pieces of the given sizes.
  std::vector<float> Run(const std::vector<uint32_t>& tokens, std::vector<size_t> pieces,
                         unsigned threads = 2, uint32_t block_size = 16,
                         uint32_t position_base = 0) {
    ThreadPool pool(threads);
    Transformer tf(*model_, pool);
    Session s(tf, 200, block_size);
    s.Reset(position_base);
    std::vector<float> all, part;
    size_t at = 0;
    for (size_t n : pieces) {
      std::span<const uint32_t> span(tokens.data() + at, n);
      EXPECT_TRUE(s.Prefill(span, LogitsFor::kAll, &part).ok());
      all.insert(all.end(), part.begin(), part.end());
      at += n;
    }
    EXPECT_EQ(tokens.size(), at);
    return all;
  }
  std::unique_ptr<Model> model_;
};

TEST_F(TransformerTest, IncrementalDecodingEqualsFullRecompute) {
  const auto tokens = Tokens(70, 1);
  const auto full = Run(tokens, {70});
  EXPECT_TRUE(BitEqual(full, Run(tokens, {33, 1, 1, 1, 34})));
  std::vector<size_t> ones(70, 1);
  EXPECT_TRUE(BitEqual(full, Run(tokens, ones)));
  // And the logits are not degenerate.
  EXPECT_NE(full[0], full[1]);
  EXPECT_TRUE(std::isfinite(full.back()));
}

TEST_F(TransformerTest, PagedAndContiguousKvAgreeExactly) {
  const auto tokens = Tokens(90, 2);
  const auto paged = Run(tokens, {50, 40}, 2, 16);
  EXPECT_TRUE(BitEqual(paged, Run(tokens, {50, 40}, 2, 200)));  // one block: contiguous
  EXPECT_TRUE(BitEqual(paged, Run(tokens, {50, 40}, 2, 1)));
  EXPECT_TRUE(BitEqual(paged, Run(tokens, {50, 40}, 2, 7)));
}

TEST_F(TransformerTest, ThreadCountNeverChangesABit) {
  const auto tokens = Tokens(64, 3);
  const auto two = Run(tokens, {64}, 2);
  EXPECT_TRUE(BitEqual(two, Run(tokens, {64}, 1)));
  EXPECT_TRUE(BitEqual(two, Run(tokens, {64}, 4)));
}

TEST_F(TransformerTest, EveryInstructionSetIsSelfConsistent) {
  const Isa saved = ActiveIsa();
  const auto tokens = Tokens(40, 4);
  for (Isa isa : {Isa::kPortable, Isa::kAvx2}) {
    if (!SetIsa(isa)) continue;
    const auto full = Run(tokens, {40});
    EXPECT_TRUE(BitEqual(full, Run(tokens, {13, 27}, 1))) << IsaName(isa);
  }
  SetIsa(saved);
}

TEST_F(TransformerTest, CachedPrefixIsExact) {
  // What `generate --context doc.kv` does: the document's KV is written into a second session's
  // cache (here copied; libkdn in the engine), then the question is prefilled.
  const auto doc = Tokens(45, 5), question = Tokens(20, 6);
  std::vector<uint32_t> both = doc;
  both.insert(both.end(), question.begin(), question.end());
  ThreadPool pool(2);
  Transformer tf(*model_, pool);
  Session a(tf, 100), b(tf, 100, 8);
  std::vector<float> full, reused;
  ASSERT_TRUE(a.Prefill(both, LogitsFor::kAll, &full).ok());
  auto first = b.AppendCached(doc);
  ASSERT_TRUE(first.ok());
  const uint32_t kv = Shape().kv_dim();
  for (uint32_t l = 0; l < Shape().n_layers; ++l) {
    for (uint32_t t = 0; t < doc.size(); ++t) {
      std::memcpy(b.cache().key(l, t), a.cache().key(l, t), kv * sizeof(float));
      std::memcpy(b.cache().value(l, t), a.cache().value(l, t), kv * sizeof(float));
    }
  }
  ASSERT_TRUE(b.Prefill(question, LogitsFor::kAll, &reused).ok());
  const size_t vocab = Shape().vocab_size;
  ASSERT_EQ(question.size() * vocab, reused.size());
  EXPECT_EQ(0, std::memcmp(reused.data(), full.data() + doc.size() * vocab,
                           reused.size() * sizeof(float)));
}

TEST_F(TransformerTest, ASubsetOfRowsComputesTheSameRows) {
  // Blending recomputes a few rows of a context; each must equal the row computed in the batch.
  const auto tokens = Tokens(30, 7);
  ThreadPool pool(2);
  Transformer tf(*model_, pool);
  Session s(tf, 64);
  ASSERT_TRUE(s.AppendCached(tokens).ok());
  Rows all, some;
  tf.Embed(tokens, 0, 0, all);
  tf.Embed(tokens, 0, 0, some);
  const std::vector<uint32_t> keep = {2, 3, 17, 29};
  some.Keep(keep, Shape());
  ASSERT_EQ(4u, some.size());
  EXPECT_EQ(17u, some.slot[2]);
  for (uint32_t l = 0; l < Shape().n_layers; ++l) {
    tf.Layer(l, all, s.cache());  // writes every row's KV
    tf.ProjectQkv(l, some);
    tf.Finish(l, some, s.cache());
  }
  const size_t dim = Shape().dim;
  for (size_t i = 0; i < keep.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(&some.x[i * dim], &all.x[keep[i] * dim], dim * sizeof(float)))
        << "row " << keep[i];
  }
}

TEST_F(TransformerTest, RopeComposesAndPositionBaseShiftsEveryRow) {
  ThreadPool pool(1);
  Transformer tf(*model_, pool);
  std::vector<float> a(Shape().dim), b;
  auto rng = test::Rng(8);
  for (float& x : a) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  b = a;
  tf.Rope(a.data(), Shape().n_heads, 300);
  tf.Rope(b.data(), Shape().n_heads, 100);
  tf.Rope(b.data(), Shape().n_heads, 200);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 2e-6) << i;
  // A sequence placed at position 40 differs from the same sequence at 0 (RoPE is relative only
  // up to rounding) but not by much.
  const auto tokens = Tokens(20, 9);
  const auto at0 = Run(tokens, {20}), at40 = Run(tokens, {20}, 2, 16, 40);
  EXPECT_FALSE(BitEqual(at0, at40));
  for (size_t i = 0; i < at0.size(); ++i) ASSERT_NEAR(at0[i], at40[i], 1e-3) << i;
}

TEST_F(TransformerTest, TruncateAndPrefillAgainRewritesTheSameKv) {
  const auto tokens = Tokens(25, 10);
  ThreadPool pool(2);
  Transformer tf(*model_, pool);
  Session s(tf, 64);
  std::vector<float> first, again;
  ASSERT_TRUE(s.Prefill(tokens, LogitsFor::kLast, &first).ok());
  ASSERT_TRUE(s.Truncate(1).ok());
  EXPECT_EQ(24u, s.size());
  ASSERT_TRUE(s.Prefill(std::span(tokens).last(1), LogitsFor::kLast, &again).ok());
  EXPECT_TRUE(BitEqual(first, again));
}

TEST_F(TransformerTest, RefusesWhatDoesNotFit) {
  ThreadPool pool(1);
  Transformer tf(*model_, pool);
  Session s(tf, 32);
  std::vector<float> logits;
  EXPECT_FALSE(s.Prefill(std::vector<uint32_t>{1, 300}, LogitsFor::kLast, &logits).ok());
  EXPECT_TRUE(s.Prefill(Tokens(33, 1), LogitsFor::kLast, &logits).IsNoSpace());
  EXPECT_FALSE(s.Prefill({}, LogitsFor::kLast, &logits).ok());
  s.Reset(250);  // seq_len 256
  EXPECT_FALSE(s.Prefill(Tokens(7, 1), LogitsFor::kLast, &logits).ok());
  EXPECT_TRUE(s.Prefill(Tokens(6, 1), LogitsFor::kLast, &logits).ok());
  EXPECT_EQ(0u, s.tokens().size() - 6);
}

TEST_F(TransformerTest, MatchesThePlainReference) {
  const auto tokens = Tokens(40, 13);
  const auto engine = Run(tokens, {40});
  reference::ReferenceLlama ref(*model_);
  const size_t vocab = Shape().vocab_size;
  for (uint32_t pos = 0; pos < tokens.size(); ++pos) {
    const std::vector<float> r = ref.Step(tokens[pos], pos);
    for (size_t i = 0; i < vocab; ++i) ASSERT_NEAR(r[i], engine[pos * vocab + i], 1e-4) << pos;
  }
}

TEST(SyntheticShapeTest, SameShapeAndSeedGiveTheSameLogits) {
  auto shape = ParseSyntheticShape("dim=64,layers=2,kv_heads=1,vocab=300,seq=64");
  ASSERT_TRUE(shape.ok());
  std::vector<std::vector<float>> runs;
  for (int i = 0; i < 2; ++i) {
    auto m = Model::Synthetic(*shape, 42);
    ASSERT_TRUE(m.ok());
    ThreadPool pool(2);
    Transformer tf(**m, pool);
    Session s(tf, 64);
    std::vector<float> logits;
    ASSERT_TRUE(s.Prefill(Tokens(16, 12), LogitsFor::kLast, &logits).ok());
    runs.push_back(logits);
  }
  EXPECT_TRUE(BitEqual(runs[0], runs[1]));
  EXPECT_EQ(300u, runs[0].size());
}

}  // namespace
}  // namespace kdn::engine
