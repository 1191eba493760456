// RoPE re-rotation: shifting keys by delta equals RoPE computed from scratch at the new positions
// (double-precision reference), for both styles, partial rotary dims, scaled positions and every
// dtype; shifting back returns the original; kdn_blend_load equals kdn_load + kdn_rope_shift.
//
// Tolerances (relative to the norm of each rotated pair): fp32 2e-6 (binary32 rounding of the
// stored input, the table and four products: a few ulp), fp16 2e-3 and bf16 1.6e-2 (one rounding
// of the input and one of the output, 2^-11 and 2^-8 each, with margin).
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "libkdn_test_util.h"
#include "store/format/element_math.h"

namespace kdn::test {
namespace {

double Tolerance(DType t) {
  switch (t) {
    case DType::kF32:
      return 2e-6;
    case DType::kF16:
      return 2e-3;
    case DType::kBF16:
      return 1.6e-2;
  }
  return 0;
}

void Store(DType t, std::byte* base, size_t i, double v) {
  if (t == DType::kF32) {
    const float f = static_cast<float>(v);
    std::memcpy(base + 4 * i, &f, 4);
  } else {
    const uint16_t h = t == DType::kF16 ? elem::FloatToHalf(static_cast<float>(v))
                                        : elem::FloatToBf16(static_cast<float>(v));
    std::memcpy(base + 2 * i, &h, 2);
  }
}

double Load(DType t, const std::byte* base, size_t i) {
  if (t == DType::kF32) {
    float f;
    std::memcpy(&f, base + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, base + 2 * i, 2);
  return t == DType::kF16 ? elem::HalfToFloat(h) : elem::Bf16ToFloat(h);
}

// Keys x (one row of heads * head_dim per token) rotated to `position`, in double.
std::vector<double> RopeAt(const ModelIdentity& m, const std::vector<double>& x, double position) {
  std::vector<double> y = x;
  const uint32_t r = m.effective_rotary_dim();
  for (uint32_t h = 0; h < m.n_kv_heads; ++h) {
    for (uint32_t i = 0; i < r / 2; ++i) {
      const uint32_t a = m.rope_style == RopeStyle::kGptj ? 2 * i : i;
      const uint32_t b = m.rope_style == RopeStyle::kGptj ? 2 * i + 1 : i + r / 2;
      const double angle =
          position / m.rope_scale * std::pow(static_cast<double>(m.rope_theta), -2.0 * i / r);
      const double xa = x[h * m.head_dim + a];
      const double xb = x[h * m.head_dim + b];
      y[h * m.head_dim + a] = xa * std::cos(angle) - xb * std::sin(angle);
      y[h * m.head_dim + b] = xa * std::sin(angle) + xb * std::cos(angle);
    }
  }
  return y;
}

// Compares row `got` (stored dtype) with `want` (double), pair by pair.
void ExpectRowNear(const ModelIdentity& m, DType t, const std::byte* got,
                   const std::vector<double>& want, double tol, const std::string& what) {
  const uint32_t r = m.effective_rotary_dim();
  for (uint32_t h = 0; h < m.n_kv_heads; ++h) {
    for (uint32_t d = 0; d < m.head_dim; ++d) {
      const size_t i = h * m.head_dim + d;
      double norm = std::fabs(want[i]);
      if (d < r) {  // the pair's norm bounds the rotation's error
        const uint32_t i_pair = m.rope_style == RopeStyle::kGptj ? d / 2 : d % (r / 2);
        const uint32_t a = m.rope_style == RopeStyle::kGptj ? 2 * i_pair : i_pair;
        const uint32_t b = m.rope_style == RopeStyle::kGptj ? 2 * i_pair + 1 : i_pair + r / 2;
        norm = std::hypot(want[h * m.head_dim + a], want[h * m.head_dim + b]);
      }
      ASSERT_NEAR(Load(t, got, i), want[i], tol * norm + 1e-30)
          << what << " head " << h << " dim " << d;
    }
  }
}

struct RopeCase {
  RopeStyle style;
  uint32_t head_dim;
  uint32_t rotary_dim;
  float theta;
  float scale;
  DType dtype;
};

class RopeShift : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeShift, EqualsRopeAtTheNewPositionAndShiftsBack) {
  const RopeCase p = GetParam();
  ModelIdentity m = TestModel(p.dtype, p.style, 2, 2, p.head_dim, p.rotary_dim);
  m.rope_theta = p.theta;
  m.rope_scale = p.scale;
  const kdn_model_desc desc = ToDesc(m);
  CtxPtr ctx = MakeCtx();
  const uint32_t n = 37;
  const uint32_t ch = m.channels();
  const size_t es = DTypeSize(p.dtype);
  const uint32_t p0 = 1000;
  std::mt19937_64 rng(p.head_dim * 31 + p.rotary_dim);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::vector<std::vector<double>> x(n, std::vector<double>(ch));
  for (auto& row : x) {
    for (double& e : row) e = normal(rng);
  }
  // Layer 1 holds the keys, in a paged HND destination to exercise strides.
  const uint32_t bs = 16;
  const uint32_t blocks = (n + bs - 1) / bs;
  std::vector<int32_t> table(blocks);
  for (uint32_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(blocks - 1 - b);
  std::vector<std::byte> keys(size_t{blocks} * bs * ch * es);
  const auto row_at = [&](uint32_t t, uint32_t h) {
    return static_cast<size_t>(
        LayoutOffset(Layout::kHnd, m.n_kv_heads, m.head_dim, bs, table[t / bs], t % bs, h, 0) * es);
  };
  const auto put = [&](std::vector<std::byte>& buf, uint32_t t, const std::vector<double>& row) {
    for (uint32_t h = 0; h < m.n_kv_heads; ++h) {
      for (uint32_t d = 0; d < m.head_dim; ++d)
        Store(p.dtype, buf.data() + row_at(t, h), d, row[h * m.head_dim + d]);
    }
  };
  const auto get = [&](const std::vector<std::byte>& buf, uint32_t t) {
    std::vector<std::byte> packed(ch * es);
    for (uint32_t h = 0; h < m.n_kv_heads; ++h) {
      std::memcpy(packed.data() + h * m.head_dim * es, buf.data() + row_at(t, h), m.head_dim * es);
    }
    return packed;
  };
  for (uint32_t t = 0; t < n; ++t) put(keys, t, RopeAt(m, x[t], p0 + t));
  const std::vector<std::byte> original = keys;
  void* kb[2] = {nullptr, keys.data()};
  kdn_dest d;
  ASSERT_EQ(kdn_dest_paged(&d, static_cast<kdn_dtype>(p.dtype), 2, kb, nullptr, m.n_kv_heads,
                           m.head_dim, bs, 1, table.data(), blocks),
            KDN_OK);
  for (int64_t delta : {int64_t{1}, int64_t{-999}, int64_t{4096}, int64_t{123457}}) {
    SCOPED_TRACE("delta " + std::to_string(delta));
    keys = original;
    ASSERT_EQ(kdn_rope_shift(ctx.get(), &desc, &d, 0, 2, 0, n, delta, nullptr), KDN_OK)
        << kdn_last_error();
    for (uint32_t t = 0; t < n; ++t) {
      ExpectRowNear(m, p.dtype, get(keys, t).data(),
                    RopeAt(m, x[t], static_cast<double>(p0 + t) + delta), Tolerance(p.dtype),
                    "token " + std::to_string(t));
    }
    ASSERT_EQ(kdn_rope_shift(ctx.get(), &desc, &d, 0, 2, 0, n, -delta, nullptr), KDN_OK)
        << kdn_last_error();
    for (uint32_t t = 0; t < n; ++t) {
      std::vector<double> orig(ch);
      const std::vector<std::byte> row = get(original, t);
      for (uint32_t i = 0; i < ch; ++i) orig[i] = Load(p.dtype, row.data(), i);
      ExpectRowNear(m, p.dtype, get(keys, t).data(), orig, 2 * Tolerance(p.dtype),
                    "back, token " + std::to_string(t));
    }
  }
  // Only the tokens asked for move.
  keys = original;
  ASSERT_EQ(kdn_rope_shift(ctx.get(), &desc, &d, 1, 2, 5, 3, 77, nullptr), KDN_OK)
      << kdn_last_error();
  for (uint32_t t = 0; t < n; ++t) {
    if (t >= 5 && t < 8) continue;
    EXPECT_TRUE(get(keys, t) == get(original, t)) << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Styles, RopeShift,
    ::testing::Values(RopeCase{RopeStyle::kNeox, 16, 0, 10000.0f, 1.0f, DType::kF32},
                      RopeCase{RopeStyle::kGptj, 16, 0, 10000.0f, 1.0f, DType::kF32},
                      RopeCase{RopeStyle::kNeox, 32, 16, 500000.0f, 1.0f, DType::kF32},
                      RopeCase{RopeStyle::kGptj, 32, 8, 10000.0f, 2.0f, DType::kF32},
                      RopeCase{RopeStyle::kNeox, 64, 64, 500000.0f, 8.0f, DType::kF16},
                      RopeCase{RopeStyle::kGptj, 16, 16, 10000.0f, 1.0f, DType::kF16},
                      RopeCase{RopeStyle::kNeox, 16, 8, 10000.0f, 1.0f, DType::kBF16},
                      RopeCase{RopeStyle::kGptj, 64, 32, 1000000.0f, 1.0f, DType::kBF16}),
    [](const auto& info) {
      const RopeCase& c = info.param;
      return std::string(RopeStyleName(c.style)) + "_d" + std::to_string(c.head_dim) + "_r" +
             std::to_string(c.rotary_dim) + "_s" + std::to_string(static_cast<int>(c.scale)) + "_" +
             std::string(DTypeName(c.dtype));
    });

TEST(RopeShiftApi, NoneStyleAndValidation) {
  CtxPtr ctx = MakeCtx();
  ModelIdentity m = TestModel(DType::kF32, RopeStyle::kNone, 1, 1, 8);
  kdn_model_desc desc = ToDesc(m);
  std::vector<float> k(8 * 4, 1.5f);
  void* kb[1] = {k.data()};
  kdn_dest d;
  ASSERT_EQ(kdn_dest_contiguous(&d, KDN_F32, 1, kb, nullptr, 1, 8, 4), KDN_OK);
  ASSERT_EQ(kdn_rope_shift(ctx.get(), &desc, &d, 0, 1, 0, 4, 100, nullptr), KDN_OK);
  EXPECT_EQ(k, std::vector<float>(8 * 4, 1.5f));
  desc.rope_style = KDN_ROPE_NEOX;
  EXPECT_EQ(kdn_rope_shift(ctx.get(), &desc, &d, 0, 1, 0, 5, 100, nullptr),
            KDN_E_INVALID_ARG);  // capacity
  EXPECT_EQ(kdn_rope_shift(ctx.get(), &desc, &d, 0, 2, 0, 4, 100, nullptr),
            KDN_E_INVALID_ARG);  // layers
  desc.head_dim = 16;
  EXPECT_EQ(kdn_rope_shift(ctx.get(), &desc, &d, 0, 1, 0, 4, 100, nullptr),
            KDN_E_INVALID_ARG);  // shape
  EXPECT_EQ(kdn_rope_shift(ctx.get(), nullptr, &d, 0, 1, 0, 4, 100, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_rope_shift(nullptr, &desc, &d, 0, 1, 0, 4, 100, nullptr), KDN_E_INVALID_ARG);
}

// kdn_blend_load == kdn_load + kdn_rope_shift, per cache, bit for bit.
TEST(Blend, EqualsLoadThenShift) {
  for (RopeStyle style : {RopeStyle::kNeox, RopeStyle::kGptj}) {
    for (DType out : {DType::kF16, DType::kF32}) {
      SCOPED_TRACE(std::string(RopeStyleName(style)) + " " + std::string(DTypeName(out)));
      TempDir dir("kdn-engine");
      CtxPtr ctx = MakeCtx();
      const ModelIdentity m = TestModel(DType::kF16, style, 3, 2, 32, 16);
      const kdn_model_desc desc = ToDesc(m);
      const std::string a = WriteSynthetic(dir, "a.kv", m, 40, "q8", 1, 0);
      const std::string b = WriteSynthetic(dir, "b.kv", m, 70, "lossless", 2, 300);
      const std::string c3 = WriteSynthetic(dir, "c.kv", m, 25, "raw", 3, 7);
      const uint32_t offsets[3] = {4, 44, 114};
      const uint32_t base = 1000;
      const uint32_t cap = 139;
      const size_t bytes = size_t{cap} * m.channels() * DTypeSize(out);
      std::vector<std::vector<std::byte>> k(3, Guarded(bytes));
      std::vector<std::vector<std::byte>> v(3, Guarded(bytes));
      std::vector<std::vector<std::byte>> k2 = k;
      std::vector<std::vector<std::byte>> v2 = v;
      const auto dest_of = [&](std::vector<std::vector<std::byte>>& kk,
                               std::vector<std::vector<std::byte>>& vv, std::vector<void*>& kb,
                               std::vector<void*>& vb) {
        kb = {kk[0].data(), kk[1].data(), kk[2].data()};
        vb = {vv[0].data(), vv[1].data(), vv[2].data()};
        kdn_dest d;
        EXPECT_EQ(kdn_dest_contiguous(&d, static_cast<kdn_dtype>(out), 3, kb.data(), vb.data(),
                                      m.n_kv_heads, m.head_dim, cap),
                  KDN_OK);
        return d;
      };
      std::vector<void*> kb1, vb1, kb2, vb2;
      const kdn_dest d1 = dest_of(k, v, kb1, vb1);
      const kdn_dest d2 = dest_of(k2, v2, kb2, vb2);
      CachePtr ca = OpenCache(ctx.get(), a);
      CachePtr cb = OpenCache(ctx.get(), b);
      CachePtr cc = OpenCache(ctx.get(), c3);
      kdn_cache* caches[3] = {ca.get(), cb.get(), cc.get()};
      ASSERT_EQ(kdn_blend_load(caches, 3, offsets, base, &desc, 0, 3, &d1, nullptr), KDN_OK)
          << kdn_last_error();
      for (kdn_cache* c : caches) ASSERT_EQ(kdn_sync(c), KDN_OK) << kdn_last_error();
      const uint32_t stored[3] = {0, 300, 7};
      const uint32_t lens[3] = {40, 70, 25};
      for (int i = 0; i < 3; ++i) {
        ASSERT_EQ(kdn_load(caches[i], 0, 3, &d2, offsets[i], nullptr), KDN_OK) << kdn_last_error();
        ASSERT_EQ(kdn_sync(caches[i]), KDN_OK) << kdn_last_error();
        const int64_t delta = int64_t{base} + offsets[i] - stored[i];
        ASSERT_EQ(kdn_rope_shift(ctx.get(), &desc, &d2, 0, 3, offsets[i], lens[i], delta, nullptr),
                  KDN_OK)
            << kdn_last_error();
      }
      for (int l = 0; l < 3; ++l) {
        EXPECT_TRUE(k[l] == k2[l]) << "layer " << l << " K";
        EXPECT_TRUE(v[l] == v2[l]) << "layer " << l << " V";
      }
      // A cache of another model is refused before anything starts.
      ModelIdentity other = m;
      other.rope_theta = 500000.0f;
      const kdn_model_desc other_desc = ToDesc(other);
      EXPECT_EQ(kdn_blend_load(caches, 3, offsets, base, &other_desc, 0, 3, &d1, nullptr),
                KDN_E_MODEL_MISMATCH);
      EXPECT_NE(std::string(kdn_last_error()).find("cache 0"), std::string::npos)
          << kdn_last_error();
      const uint32_t too_far[3] = {4, 44, 120};  // 120 + 25 > 139
      EXPECT_EQ(kdn_blend_load(caches, 3, too_far, base, &desc, 0, 3, &d1, nullptr),
                KDN_E_INVALID_ARG);
    }
  }
}

}  // namespace
}  // namespace kdn::test
