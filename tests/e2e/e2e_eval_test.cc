// Issue 6, item 3, through the engine's eval (library calls, real model): lossy codecs keep the
// next-token distributions close (q8 agreement >= 98%), and blending separately cached documents
// brings KL to the full prefill down as the recompute ratio rises, to ~0 at 1.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "e2e_util.h"
#include "kdn-engine/eval.h"
#include "kdn-engine/kv_io.h"
#include "kdn-engine/runtime.h"
#include "kdn_root.h"
#include "test_util.h"

namespace kdn::e2e {
namespace {

using engine::EvalOptions;
using engine::EvalReport;

const std::string kData = std::string(KDN_SOURCE_DIR) + "/examples/kdn-engine/data/";

class EvalTest : public ::testing::TestWithParam<RootKind> {
 protected:
  void SetUp() override {
    const std::string model = kdn::test::TestModelPath();
    KDN_REQUIRE_OR_SKIP(!model.empty(), "the test model (stories260K.bin) is not available");
    engine::RuntimeOptions o;
    o.model_path = model;
    auto rt = engine::MakeRuntime(o);
    ASSERT_TRUE(rt.ok()) << rt.status().ToString();
    rt_ = std::move(*rt);
    auto ctx = engine::KdnContext::Create();
    ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
    ctx_ = std::move(*ctx);
    auto root = roots_.Get(GetParam());
    ASSERT_TRUE(root.ok()) << root.status().ToString();
    dir_ = (*root)->path() + "/" + TestDirName();
  }
  static void TearDownTestSuite() { roots_.Clear(); }

  EvalReport Evaluate(const std::vector<std::string>& files, const std::string& query_file,
                      EvalOptions options, const std::string& tag) {
    std::vector<std::string> texts;
    for (const std::string& f : files) texts.push_back(ReadFile(kData + f));
    const std::string query = query_file.empty() ? "" : ReadFile(kData + query_file);
    auto input = engine::MakeEvalInput(texts, query, 128, 0);
    EXPECT_TRUE(input.ok()) << input.status().ToString();
    options.work_dir = dir_ + "/" + tag;
    std::filesystem::create_directories(options.work_dir);
    options.runs = 1;  // timings are the benchmark's job
    auto report = engine::Evaluate(*rt_, *ctx_, *input, options);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : EvalReport{};
  }

  std::unique_ptr<engine::Runtime> rt_;
  std::unique_ptr<engine::KdnContext> ctx_;
  static SharedRoots roots_;
  std::string dir_;
};

SharedRoots EvalTest::roots_;

TEST_P(EvalTest, LossyCodecsStayCloseAndQ8Agrees98Percent) {
  // Documents cached together, then a question teacher-forced after them: several orders and
  // questions, so that agreement is a share of ~700 positions, not of one short text.
  const std::vector<std::string> codecs = {"raw", "lossless", "q8", "q4", "q2"};
  const std::vector<std::pair<std::vector<std::string>, std::string>> setups = {
      {{"boat.txt", "owl.txt", "garden.txt"}, "question-garden.txt"},
      {{"garden.txt", "owl.txt", "boat.txt"}, "question-boat.txt"},
      {{"rain.txt", "garden.txt"}, "question-garden.txt"},
      {{"owl.txt", "rain.txt", "boat.txt"}, "question-boat.txt"},
      {{"garden.txt"}, "question-garden.txt"},
      {{"boat.txt"}, "question-boat.txt"}};
  std::vector<double> agree(codecs.size()), kl(codecs.size()), bits(codecs.size());
  size_t positions = 0;
  for (size_t s = 0; s < setups.size(); ++s) {
    EvalOptions o;
    o.codecs = codecs;
    o.ratios = {};
    const EvalReport r =
        Evaluate(setups[s].first, setups[s].second, o, "codecs-" + std::to_string(s));
    ASSERT_EQ(codecs.size(), r.codecs.size());
    for (size_t i = 0; i < codecs.size(); ++i) {
      agree[i] += r.codecs[i].quality.agreement * r.query_tokens;
      kl[i] += r.codecs[i].quality.mean_kl * r.query_tokens;
      bits[i] = r.codecs[i].bits_per_value;
    }
    positions += r.query_tokens;
  }
  ASSERT_GE(positions, 600u);
  for (size_t i = 0; i < codecs.size(); ++i) {
    agree[i] /= positions;
    kl[i] /= positions;
    std::printf("%-9s agreement %.4f  mean KL %.6f  bits/value %.2f\n", codecs[i].c_str(), agree[i],
                kl[i], bits[i]);
  }
  // raw and lossless: the same logits, bit for bit (KL exactly 0).
  EXPECT_EQ(1.0, agree[0]);
  EXPECT_EQ(0.0, kl[0]);
  EXPECT_EQ(1.0, agree[1]);
  EXPECT_EQ(0.0, kl[1]);
  EXPECT_GE(agree[2], 0.98) << "q8";
  EXPECT_LT(kl[2], kl[3]);
  EXPECT_LT(kl[3], kl[4]);
  EXPECT_GE(agree[2], agree[3]);
  EXPECT_GE(agree[3], agree[4]);
  EXPECT_GT(agree[4], 0.05) << "q2 should still be far above chance (1/512)";
  EXPECT_NEAR(32.0, bits[0], 0.01);
  EXPECT_LT(bits[1], 32.0);
  EXPECT_LT(bits[2], 10.0);
  EXPECT_LT(bits[3], bits[2]);
  EXPECT_LT(bits[4], bits[3]);
}

TEST_P(EvalTest, BlendingApproachesFullPrefillAsTheRatioRises) {
  EvalOptions o;
  o.codecs = {};
  o.ratios = {0.0f, 0.05f, 0.15f, 0.3f, 0.6f, 1.0f};
  const EvalReport r =
      Evaluate({"boat.txt", "owl.txt", "garden.txt"}, "question-garden.txt", o, "blend");
  ASSERT_EQ(o.ratios.size(), r.blends.size());
  for (const auto& b : r.blends) {
    std::printf("ratio %.2f  agreement %.4f  mean KL %.6f  recomputed %u of %u\n", b.ratio,
                b.quality.agreement, b.quality.mean_kl, b.recomputed_tokens, r.context_tokens);
  }
  const double kl0 = r.blends.front().quality.mean_kl, kl1 = r.blends.back().quality.mean_kl;
  EXPECT_GT(kl0, 1e-3) << "separately cached documents should differ from a joint prefill";
  EXPECT_LT(kl1, 1e-6) << "ratio 1 recomputes every token: ~0";
  EXPECT_EQ(r.context_tokens, r.blends.back().recomputed_tokens);
  for (size_t i = 1; i < r.blends.size(); ++i) {
    // Falls with the ratio (a little slack between close ratios, none overall).
    EXPECT_LE(r.blends[i].quality.mean_kl, r.blends[i - 1].quality.mean_kl * 1.05 + 1e-7)
        << "ratio " << r.blends[i].ratio;
  }
  EXPECT_LT(r.blends[2].quality.mean_kl, kl0 * 0.9) << "ratio 0.15 should repair a good part";
  EXPECT_LE(r.blends[3].quality.agreement + 1e-9, r.blends.back().quality.agreement);
}

INSTANTIATE_TEST_SUITE_P(Roots, EvalTest, ::testing::ValuesIn(AvailableRoots()),
                         [](const auto& info) { return std::string(RootName(info.param)); });

}  // namespace
}  // namespace kdn::e2e
