// The engine on the real checkpoint (stories260K): the reader gets the shape right, the optimized
// forward pass matches the plain reference, and greedy decoding is deterministic.
#include <cmath>
#include <cstring>
#include <vector>

#include "kdn-engine/model.h"
#include "kdn-engine/session.h"
#include "kdn-engine/tokenizer.h"
#include "reference_llama.h"
#include "test_util.h"

namespace kdn::engine {
namespace {

class RealModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = kdn::test::TestModelPath();
    KDN_REQUIRE_OR_SKIP(!path.empty(), "the test model (stories260K.bin) is not available");
    auto m = Model::Load(path);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
  }
  std::unique_ptr<Model> model_;
};

// Greedy continuation of `prompt` (n tokens), prefilled in pieces of `split` tokens.
std::vector<uint32_t> Greedy(const Model& m, unsigned threads, const std::vector<uint32_t>& prompt,
                             size_t split, int n) {
  ThreadPool pool(threads);
  Transformer tf(m, pool);
  Session s(tf, 512);
  std::vector<float> logits;
  for (size_t at = 0; at < prompt.size(); at += split) {
    const size_t len = std::min(split, prompt.size() - at);
    EXPECT_TRUE(s.Prefill(std::span(prompt).subspan(at, len), LogitsFor::kLast, &logits).ok());
  }
  std::vector<uint32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(Argmax(logits));
    const uint32_t one[1] = {out.back()};
    EXPECT_TRUE(s.Prefill(one, LogitsFor::kLast, &logits).ok());
  }
  return out;
}

TEST_F(RealModelTest, ReadsTheShape) {
  const ModelConfig& c = model_->config();
  EXPECT_EQ(64u, c.dim);
  EXPECT_EQ(172u, c.hidden_dim);
  EXPECT_EQ(5u, c.n_layers);
  EXPECT_EQ(8u, c.n_heads);
  EXPECT_EQ(4u, c.n_kv_heads);
  EXPECT_EQ(512u, c.vocab_size);
  EXPECT_EQ(512u, c.seq_len);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(model_->classifier(), model_->token_embedding());
}

TEST_F(RealModelTest, MatchesThePlainReference) {
  const std::vector<uint32_t> tokens =
      Tokenize("Once upon a time, there was a little girl named Lily. She liked to play.", true);
  ThreadPool pool(2);
  Transformer tf(*model_, pool);
  Session s(tf, 512);
  std::vector<float> logits;
  ASSERT_TRUE(s.Prefill(tokens, LogitsFor::kAll, &logits).ok());
  reference::ReferenceLlama ref(*model_);
  const size_t vocab = model_->config().vocab_size;
  double max_diff = 0;
  for (uint32_t pos = 0; pos < tokens.size(); ++pos) {
    const std::vector<float> r = ref.Step(tokens[pos], pos);
    for (size_t i = 0; i < vocab; ++i) {
      max_diff = std::max(max_diff, double(std::abs(r[i] - logits[pos * vocab + i])));
    }
  }
  EXPECT_LT(max_diff, 1e-3) << "the engine and the reference disagree";
}

TEST_F(RealModelTest, GreedyDecodingFollowsTheReferenceAndIsDeterministic) {
  const std::vector<uint32_t> prompt = Tokenize("Once upon a time", true);
  const std::vector<uint32_t> a = Greedy(*model_, 2, prompt, prompt.size(), 40);
  EXPECT_EQ(a, Greedy(*model_, 1, prompt, 1, 40));
  EXPECT_EQ(a, Greedy(*model_, 2, prompt, 5, 40));
  // The reference picks the same tokens wherever its top two logits are not a near tie.
  reference::ReferenceLlama ref(*model_);
  std::vector<float> logits;
  uint32_t pos = 0;
  for (uint32_t t : prompt) logits = ref.Step(t, pos++);
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<float> sorted = logits;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] > 1e-3f) {
      ASSERT_EQ(Argmax(logits), a[i]) << "step " << i;
    }
    logits = ref.Step(a[i], pos++);
  }
  // Plausible output for a model whose vocabulary beyond the bytes is merges: not one token over
  // and over, and mostly merge tokens (the model never saw these byte tokens as input much).
  std::vector<uint32_t> distinct = a;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  EXPECT_GE(distinct.size(), 5u);
}

}  // namespace
}  // namespace kdn::engine
