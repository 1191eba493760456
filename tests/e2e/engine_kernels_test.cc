// The engine's kernels: every output element's arithmetic is independent of batch size, tiling and
// thread count, on every instruction set the CPU has.
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "kdn-engine/kernels.h"
#include "kdn-engine/thread_pool.h"
#include "test_util.h"

namespace kdn::engine {
namespace {

std::vector<float> RandomVector(size_t n, uint64_t seed) {
  auto rng = test::Rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Restores the start-up instruction set after a test switched it.
class IsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    saved_ = ActiveIsa();
    if (!SetIsa(GetParam())) GTEST_SKIP() << "skipped: this CPU lacks " << IsaName(GetParam());
  }
  void TearDown() override { SetIsa(saved_); }
  Isa saved_ = Isa::kPortable;
};

TEST_P(IsaTest, MatMulDoesNotDependOnBatchOrThreads) {
  // Sizes with ragged tails for every tile shape (rows % 4, tokens % 3 and % 6, in % 8 and % 16).
  const size_t n = 53, in = 45, out = 39;
  const std::vector<float> x = RandomVector(n * in, 1), w = RandomVector(out * in, 2);
  ThreadPool one(1), two(2);
  std::vector<float> batch(n * out), single(n * out);
  MatMul(two, x.data(), n, in, w.data(), out, batch.data());
  for (size_t t = 0; t < n; ++t) MatMul(one, &x[t * in], 1, in, w.data(), out, &single[t * out]);
  ASSERT_EQ(0, std::memcmp(batch.data(), single.data(), batch.size() * sizeof(float)));
  for (size_t t = 0; t < n; ++t) {
    for (size_t o = 0; o < out; ++o) {
      double ref = 0;
      for (size_t i = 0; i < in; ++i) ref += double{w[o * in + i]} * x[t * in + i];
      ASSERT_NEAR(ref, batch[t * out + o], 1e-4) << "t=" << t << " o=" << o;
      // Dot is the same per-element arithmetic as the product.
      ASSERT_EQ(batch[t * out + o], Dot(&w[o * in], &x[t * in], in));
    }
  }
}

TEST_P(IsaTest, LargeMatMulSplitsAcrossThreadsIdentically) {
  const size_t n = 100, in = 256, out = 130;  // above the threshold for running on the pool
  const std::vector<float> x = RandomVector(n * in, 3), w = RandomVector(out * in, 4);
  ThreadPool one(1), three(3);
  std::vector<float> a(n * out), b(n * out);
  MatMul(one, x.data(), n, in, w.data(), out, a.data());
  MatMul(three, x.data(), n, in, w.data(), out, b.data());
  ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST_P(IsaTest, ManyKeysGiveTheSameBitsAsOneAtATime) {
  for (size_t n : {size_t{8}, size_t{13}, size_t{75}, size_t{128}}) {
    const size_t stride = n + 5, n_keys = 11;
    const std::vector<float> q = RandomVector(n, 7), k = RandomVector(n_keys * stride, 8);
    const std::vector<float> p = RandomVector(n_keys, 9), y0 = RandomVector(n, 10);
    std::vector<float> scores(n_keys);
    DotMany(q.data(), k.data(), stride, n_keys, n, scores.data());
    for (size_t j = 0; j < n_keys; ++j) {
      ASSERT_EQ(Dot(q.data(), &k[j * stride], n), scores[j]) << "n=" << n << " key " << j;
    }
    std::vector<float> many = y0, one = y0, split = y0;
    AxpyMany(many.data(), p.data(), k.data(), stride, n_keys, n);
    for (size_t j = 0; j < n_keys; ++j) Axpy(one.data(), p[j], &k[j * stride], n);
    AxpyMany(split.data(), p.data(), k.data(), stride, 4, n);
    AxpyMany(split.data(), p.data() + 4, &k[4 * stride], stride, n_keys - 4, n);
    ASSERT_EQ(0, std::memcmp(many.data(), one.data(), n * sizeof(float))) << "n=" << n;
    ASSERT_EQ(0, std::memcmp(many.data(), split.data(), n * sizeof(float))) << "n=" << n;
    for (size_t d = 0; d < n; ++d) {
      double ref = y0[d];
      for (size_t j = 0; j < n_keys; ++j) ref += double{p[j]} * k[j * stride + d];
      ASSERT_NEAR(ref, many[d], 1e-5);
    }
  }
}

TEST_P(IsaTest, RmsNormMatchesDefinition) {
  const std::vector<float> x = RandomVector(37, 5), weight = RandomVector(37, 6);
  std::vector<float> out(37);
  RmsNorm(out.data(), x.data(), weight.data(), x.size(), 1e-5f);
  double ss = 0;
  for (float v : x) ss += double{v} * v;
  const double scale = 1.0 / std::sqrt(ss / 37 + 1e-5);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(weight[i] * x[i] * scale, out[i], 1e-5);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, IsaTest, ::testing::Values(Isa::kPortable, Isa::kAvx2),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

TEST(ThreadPoolTest, CoversEveryIndexOnceInGrainAlignedRanges) {
  for (unsigned threads : {1u, 2u, 5u}) {
    ThreadPool pool(threads);
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{64}, size_t{1001}}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<bool> misaligned{false};
      pool.ParallelFor(
          n,
          [&](size_t b, size_t e) {
            if (b % 4 != 0) misaligned = true;
            for (size_t i = b; i < e; ++i) hits[i]++;
          },
          4);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(1, hits[i].load()) << threads << " threads, n=" << n;
      EXPECT_FALSE(misaligned.load());
    }
  }
}

}  // namespace
}  // namespace kdn::engine
