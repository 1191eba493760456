// Issue 6, item 3, through the kdn-engine binary: reusing a cached document is exact (raw and
// lossless: same tokens, bit-identical logits), placing it at another position is exact up to
// RoPE arithmetic, and bad caches are refused with a clear error, never a crash.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "e2e_util.h"
#include "kdn_root.h"
#include "test_util.h"

namespace kdn::e2e {
namespace {

const std::string kEngine = KDN_ENGINE_BIN;
const std::string kData = std::string(KDN_SOURCE_DIR) + "/examples/kdn-engine/data/";

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> f(bytes.size() / sizeof(float));
  std::memcpy(f.data(), bytes.data(), f.size() * sizeof(float));
  return f;
}

// Every test runs with its `.kv` files in a plain directory and, where kdnfs is built, in a
// mounted kdnfs (kdn_root.h).
class ReuseTest : public ::testing::TestWithParam<RootKind> {
 protected:
  void SetUp() override {
    model_ = kdn::test::TestModelPath();
    KDN_REQUIRE_OR_SKIP(!model_.empty(), "the test model (stories260K.bin) is not available");
    auto root = roots_.Get(GetParam());
    ASSERT_TRUE(root.ok()) << root.status().ToString();
    dir_ = (*root)->path() + "/" + TestDirName();
    std::filesystem::create_directories(dir_);
  }
  static void TearDownTestSuite() { roots_.Clear(); }

  CommandResult Engine(std::vector<std::string> args) {
    args.insert(args.begin(), kEngine);
    args.insert(args.begin() + 2, {"--model", model_});
    return RunCommand(args);
  }
  // `prefill` into the root; asserts success.
  void Prefill(const std::string& text_file, const std::string& out, const std::string& codec,
               uint32_t position = 0) {
    const CommandResult r = Engine({"prefill", "--text", kData + text_file, "--out", out, "--codec",
                                    codec, "--position", std::to_string(position)});
    ASSERT_EQ(0, r.exit_code) << Describe(r);
  }
  // `generate`; returns stdout, the logits in *logits.
  std::string Generate(std::vector<std::string> args, std::vector<float>* logits,
                       int max_new = 24) {
    const std::string logits_path = scratch_ / ("logits-" + std::to_string(n_runs_++));
    args.insert(args.begin(), "generate");
    for (const std::string& a : {std::string("--max-new"), std::to_string(max_new),
                                 std::string("--logits-out"), logits_path}) {
      args.push_back(a);
    }
    const CommandResult r = Engine(args);
    EXPECT_EQ(0, r.exit_code) << Describe(r);
    EXPECT_NE(std::string::npos, r.err.find("ttft_ms=")) << r.err;
    *logits = Floats(ReadFile(logits_path));
    return r.out;
  }

  static SharedRoots roots_;
  std::string model_;
  std::string dir_;
  kdn::test::TempDir scratch_{"kdn-e2e"};
  int n_runs_ = 0;
};

SharedRoots ReuseTest::roots_;

TEST_P(ReuseTest, RawAndLosslessReuseIsBitIdenticalToFullPrefill) {
  const std::string doc = ReadFile(kData + "garden.txt");
  const std::string question = ReadFile(kData + "question-garden.txt");
  std::vector<float> full;
  const std::string expected = Generate({"--prompt", doc + question}, &full);
  ASSERT_EQ(24u * 512, full.size());
  EXPECT_FALSE(expected.empty());
  for (const std::string codec : {"raw", "lossless"}) {
    const std::string kv = dir_ + "/garden-" + codec + ".kv";
    Prefill("garden.txt", kv, codec);
    std::vector<float> reused;
    EXPECT_EQ(expected, Generate({"--context", kv, "--prompt", question}, &reused)) << codec;
    ASSERT_EQ(full.size(), reused.size());
    EXPECT_EQ(0, std::memcmp(full.data(), reused.data(), full.size() * sizeof(float)))
        << codec << ": logits differ from the full prefill";
  }
}

TEST_P(ReuseTest, ContinuingAContextWithoutPromptIsExact) {
  const std::string kv = dir_ + "/boat.kv";
  Prefill("boat.txt", kv, "lossless");
  std::vector<float> full, reused;
  const std::string expected = Generate({"--prompt", ReadFile(kData + "boat.txt")}, &full, 16);
  EXPECT_EQ(expected, Generate({"--context", kv}, &reused, 16));
  ASSERT_EQ(full.size(), reused.size());
  EXPECT_EQ(0, std::memcmp(full.data(), reused.data(), full.size() * sizeof(float)));
}

TEST_P(ReuseTest, ACacheComputedAtPositionPIsExactThere) {
  const uint32_t p = 100;
  const std::string kv = dir_ + "/garden-at-100.kv";
  Prefill("garden.txt", kv, "raw", p);
  const std::string question = ReadFile(kData + "question-garden.txt");
  std::vector<float> full, reused;
  const std::string expected = Generate(
      {"--position", std::to_string(p), "--prompt", ReadFile(kData + "garden.txt") + question},
      &full);
  EXPECT_EQ(
      expected,
      Generate({"--position", std::to_string(p), "--context", kv, "--prompt", question}, &reused));
  EXPECT_EQ(0, std::memcmp(full.data(), reused.data(), full.size() * sizeof(float)));
}

// Max |a - b| over two logit dumps of the same shape.
double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    m = std::max(m, double(std::abs(a[i] - b[i])));
  }
  return m;
}

TEST_P(ReuseTest, PlacingACacheAtAnotherPositionIsExactUpToRope) {
  const uint32_t p = 150;
  const std::string at0 = dir_ + "/garden-at-0.kv", atp = dir_ + "/garden-at-p.kv";
  Prefill("garden.txt", at0, "raw", 0);
  Prefill("garden.txt", atp, "raw", p);
  const std::string question = ReadFile(kData + "question-garden.txt");
  std::vector<float> moved, native;
  const std::string a =
      Generate({"--position", std::to_string(p), "--context", at0, "--prompt", question}, &moved);
  const std::string b =
      Generate({"--position", std::to_string(p), "--context", atp, "--prompt", question}, &native);
  EXPECT_EQ(b, a);
  // Logits are ~10 in magnitude; re-rotation differs from direct rotation by float rounding.
  EXPECT_LT(MaxDiff(native, moved), 1e-4) << "re-rotated keys drift from keys computed there";
  EXPECT_GT(MaxDiff(native, moved), 0.0) << "the cache at 0 was not re-rotated";
}

TEST_P(ReuseTest, ASecondDocumentPlacedAfterTheFirstIsExactUpToRope) {
  // boat.kv at 0, then garden: computed at 0 and moved, or computed (alone) where it lands. Both
  // lack garden's attention to boat, so they must agree up to RoPE arithmetic.
  const std::string boat = dir_ + "/boat.kv", at0 = dir_ + "/garden-0.kv",
                    there = dir_ + "/garden-there.kv";
  Prefill("boat.txt", boat, "raw");
  const uint32_t boat_tokens = static_cast<uint32_t>(ReadFile(kData + "boat.txt").size() + 1);
  Prefill("garden.txt", at0, "raw", 0);
  Prefill("garden.txt", there, "raw", boat_tokens);
  const std::string q = ReadFile(kData + "question-garden.txt");
  std::vector<float> moved, native;
  const std::string a = Generate({"--context", boat, "--context", at0, "--prompt", q}, &moved);
  const std::string b = Generate({"--context", boat, "--context", there, "--prompt", q}, &native);
  EXPECT_EQ(b, a);
  EXPECT_LT(MaxDiff(native, moved), 1e-4);
  // And blending them runs through the CLI: every context token recomputed at ratio 1.
  const CommandResult r = Engine({"generate", "--context", boat, "--context", at0, "--prompt", q,
                                  "--blend-ratio", "1", "--max-new", "4"});
  ASSERT_EQ(0, r.exit_code) << Describe(r);
  const size_t garden_tokens = ReadFile(kData + "garden.txt").size() + 1;
  EXPECT_NE(std::string::npos,
            r.err.find("recomputed_tokens=" + std::to_string(boat_tokens + garden_tokens)))
      << r.err;
}

TEST_P(ReuseTest, InfoReportsWhatWasSaved) {
  const std::string kv = dir_ + "/owl.kv";
  Prefill("owl.txt", kv, "q4");
  const CommandResult r = RunCommand({kEngine, "info", "--field", "tokens", kv});
  ASSERT_EQ(0, r.exit_code) << Describe(r);
  EXPECT_EQ(std::to_string(ReadFile(kData + "owl.txt").size() + 1) + "\n", r.out);
  const CommandResult all = RunCommand({kEngine, "info", kv});
  EXPECT_NE(std::string::npos, all.out.find("model: stories260K\n")) << all.out;
  EXPECT_NE(std::string::npos, all.out.find("codec: q4")) << all.out;
}

TEST_P(ReuseTest, RefusesAnotherModelsCache) {
  const std::string kv = dir_ + "/synthetic.kv";
  const CommandResult made = RunCommand({kEngine, "prefill", "--synthetic-shape", "stories260K",
                                         "--text", kData + "rain.txt", "--out", kv});
  ASSERT_EQ(0, made.exit_code) << Describe(made);
  const CommandResult r = Engine({"generate", "--context", kv, "--prompt", "Hi"});
  EXPECT_EQ(1, r.exit_code) << Describe(r);
  EXPECT_EQ(0, r.signal);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(std::string::npos, r.err.find("Model mismatch")) << r.err;
}

TEST_P(ReuseTest, RefusesACorruptCacheWithoutCrashing) {
  // Corrupted in a plain directory: kdnfs itself refuses to store a `.kv` that fails its checks.
  kdn::test::TempDir plain("kdn-e2e-corrupt");
  const std::string kv = plain / "rain.kv";
  Prefill("rain.txt", kv, "raw");
  std::string bytes = ReadFile(kv);
  ASSERT_GT(bytes.size(), 8192u);
  bytes[4096 + 100] ^= 0x40;  // inside layer 0's K block
  WriteFile(kv, bytes);
  const CommandResult r = Engine({"generate", "--context", kv, "--prompt", "Hi"});
  EXPECT_EQ(1, r.exit_code) << Describe(r);
  EXPECT_EQ(0, r.signal);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(std::string::npos, r.err.find("Corruption")) << r.err;
  WriteFile(kv, bytes.substr(0, 1000));  // truncated
  const CommandResult t = Engine({"generate", "--context", kv, "--prompt", "Hi"});
  EXPECT_EQ(1, t.exit_code) << Describe(t);
  EXPECT_EQ(0, t.signal);
}

INSTANTIATE_TEST_SUITE_P(Roots, ReuseTest, ::testing::ValuesIn(AvailableRoots()),
                         [](const auto& info) { return std::string(RootName(info.param)); });

}  // namespace
}  // namespace kdn::e2e
