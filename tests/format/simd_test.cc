// Every SIMD kernel against the scalar reference (element_math.h), bit for bit, on every ISA this
// CPU supports. CI's machine has AVX2 and AVX-512; a machine without them tests the scalar path
// only and says so.
#include "store/format/simd.h"
#include "format_test_util.h"

namespace kdn {
namespace {

using simd::Isa;
using simd::Kernels;

constexpr DType kDTypes[] = {DType::kF16, DType::kBF16, DType::kF32};

std::vector<Isa> SimdIsas() {
  std::vector<Isa> out;
  for (Isa isa : simd::SupportedIsas()) {
    if (isa != Isa::kScalar) out.push_back(isa);
  }
  return out;
}

#if defined(__x86_64__)
constexpr bool kX86 = true;
#else
constexpr bool kX86 = false;
#endif

#define REQUIRE_SIMD()              \
  KDN_REQUIRE_OR_SKIP(              \
      !SimdIsas().empty() || !kX86, \
      "this x86-64 CPU has neither AVX2+F16C nor AVX-512; only the scalar path runs")

// Equal bytes, except that where both are NaN the payloads may differ: when a NaN scale meets a
// NaN zero, which one propagates depends on the operand order, and compilers may swap the
// operands of an addition. (Encoders never write NaN parameters; docs/kv-format.md says so.)
bool SameValues(const std::vector<std::byte>& a, const std::vector<std::byte>& b, DType t,
                size_t offset) {
  if (a.size() != b.size()) return false;
  const size_t w = DTypeSize(t);
  for (size_t i = offset; i + w <= a.size(); i += w) {
    if (std::memcmp(a.data() + i, b.data() + i, w) == 0) continue;
    const float x = test::LoadAsFloat(a.data() + i, t, 0),
                y = test::LoadAsFloat(b.data() + i, t, 0);
    if (!(std::isnan(x) && std::isnan(y))) return false;
  }
  return true;
}

// Scales and zeros as a decoder sees them: widened fp16 values of every kind, subnormals included.
std::vector<float> RandomParams(size_t n, std::mt19937_64& rng, bool finite) {
  std::vector<float> v(n);
  for (auto& x : v) {
    uint16_t h = static_cast<uint16_t>(rng());
    if (finite && (h & 0x7c00) == 0x7c00) h &= 0xbfff;
    x = elem::HalfToFloat(h);
  }
  return v;
}

TEST(SimdTest, ReportsIsas) {
  std::string names;
  for (Isa isa : simd::SupportedIsas()) names += std::string(simd::IsaName(isa)) + " ";
  RecordProperty("isas", names);
  std::cout << "supported: " << names << " best: " << simd::IsaName(simd::BestIsa()) << "\n";
  EXPECT_TRUE(simd::IsaSupported(Isa::kScalar));
  EXPECT_TRUE(simd::IsaSupported(simd::BestIsa()));
  EXPECT_EQ(simd::KernelsFor(Isa::kScalar).isa, Isa::kScalar);
}

TEST(SimdTest, DequantChannelsMatchesScalar) {
  REQUIRE_SIMD();
  const Kernels& ref = simd::KernelsFor(Isa::kScalar);
  auto rng = test::Rng(1);
  for (Isa isa : SimdIsas()) {
    const Kernels& k = simd::KernelsFor(isa);
    ASSERT_EQ(k.isa, isa);
    for (uint32_t bits : {8u, 4u, 2u}) {
      for (DType out : kDTypes) {
        for (uint32_t channels :
             {1u, 3u, 8u, 15u, 16u, 17u, 31u, 32u, 33u, 47u, 64u, 100u, 1024u}) {
          for (bool finite : {true, false}) {
            const auto scale = RandomParams(channels, rng, finite);
            const auto zero = RandomParams(channels, rng, finite);
            const auto codes = test::RandomBytes((channels * bits + 7) / 8, rng());
            std::vector<std::byte> a(channels * DTypeSize(out) + 3), b(a.size());
            const auto* cp = reinterpret_cast<const uint8_t*>(codes.data());
            // Odd output alignment on purpose.
            ref.dequant_channels[simd::BitsIndex(bits)][simd::DTypeIndex(out)](
                cp, channels, scale.data(), zero.data(), a.data() + 1);
            k.dequant_channels[simd::BitsIndex(bits)][simd::DTypeIndex(out)](
                cp, channels, scale.data(), zero.data(), b.data() + 1);
            if (finite) {
              ASSERT_EQ(a, b) << simd::IsaName(isa) << " bits " << bits << " " << DTypeName(out)
                              << " channels " << channels;
            } else {
              ASSERT_TRUE(SameValues(a, b, out, 1)) << simd::IsaName(isa) << " bits " << bits;
            }
          }
        }
      }
    }
  }
}

TEST(SimdTest, DequantGroupsMatchesScalar) {
  REQUIRE_SIMD();
  const Kernels& ref = simd::KernelsFor(Isa::kScalar);
  auto rng = test::Rng(2);
  for (Isa isa : SimdIsas()) {
    const Kernels& k = simd::KernelsFor(isa);
    for (uint32_t bits : {8u, 4u, 2u}) {
      for (DType out : kDTypes) {
        for (uint32_t group : {k.group_multiple, 2 * k.group_multiple, 3 * k.group_multiple, 64u}) {
          for (uint32_t channels : {1u, group - 1, group, group + 5, 3 * group + 7, 1024u}) {
            const uint32_t ngc = (channels + group - 1) / group;
            const auto params = test::RandomBytes(4 * ngc + 1, rng());  // odd alignment below
            const auto codes = test::RandomBytes((channels * bits + 7) / 8, rng());
            std::vector<std::byte> a(channels * DTypeSize(out)), b(a.size());
            const auto* cp = reinterpret_cast<const uint8_t*>(codes.data());
            const auto* pp = reinterpret_cast<const uint8_t*>(params.data()) + 1;
            ref.dequant_groups[simd::BitsIndex(bits)][simd::DTypeIndex(out)](cp, channels, pp,
                                                                             group, a.data());
            k.dequant_groups[simd::BitsIndex(bits)][simd::DTypeIndex(out)](cp, channels, pp, group,
                                                                           b.data());
            // Random parameters: NaN scales and zeros included.
            ASSERT_TRUE(SameValues(a, b, out, 0)) << simd::IsaName(isa) << " bits " << bits
                                                  << " group " << group << " channels " << channels;
            // Finite parameters: identical bytes.
            auto fp = params;
            for (size_t r = 1; r + 2 <= fp.size(); r += 2) {
              uint16_t h;
              std::memcpy(&h, fp.data() + r, 2);
              if ((h & 0x7c00) == 0x7c00) h &= 0xbfff;
              std::memcpy(fp.data() + r, &h, 2);
            }
            const auto* fpp = reinterpret_cast<const uint8_t*>(fp.data()) + 1;
            ref.dequant_groups[simd::BitsIndex(bits)][simd::DTypeIndex(out)](cp, channels, fpp,
                                                                             group, a.data());
            k.dequant_groups[simd::BitsIndex(bits)][simd::DTypeIndex(out)](cp, channels, fpp, group,
                                                                           b.data());
            ASSERT_EQ(a, b) << simd::IsaName(isa) << " bits " << bits << " group " << group;
          }
        }
      }
    }
  }
}

TEST(SimdTest, WidenParamsMatchesScalar) {
  REQUIRE_SIMD();
  const Kernels& ref = simd::KernelsFor(Isa::kScalar);
  for (Isa isa : SimdIsas()) {
    const Kernels& k = simd::KernelsFor(isa);
    // Every fp16 pattern as a scale and as a zero.
    std::vector<uint8_t> rec(4 * 65536 + 1);
    for (uint32_t i = 0; i < 65536; ++i) {
      const uint16_t s = static_cast<uint16_t>(i), z = static_cast<uint16_t>(i * 40503u);
      std::memcpy(&rec[1 + 4 * i], &s, 2);
      std::memcpy(&rec[1 + 4 * i + 2], &z, 2);
    }
    for (size_t n : {size_t{65536}, size_t{65535}, size_t{7}}) {
      std::vector<float> s1(n), z1(n), s2(n), z2(n);
      ref.widen_params(rec.data() + 1, n, s1.data(), z1.data());
      k.widen_params(rec.data() + 1, n, s2.data(), z2.data());
      auto same = [](float a, float b) {
        uint32_t x, y;
        std::memcpy(&x, &a, 4);
        std::memcpy(&y, &b, 4);
        // Signaling NaNs may come out quiet (bit 22 set): any arithmetic quiets them anyway.
        return x == y || (std::isnan(a) && (x | 0x400000u) == y);
      };
      for (size_t i = 0; i < n; ++i) {
        ASSERT_TRUE(same(s1[i], s2[i])) << simd::IsaName(isa) << " scale " << i;
        ASSERT_TRUE(same(z1[i], z2[i])) << simd::IsaName(isa) << " zero " << i;
      }
    }
  }
}

bool IsSignalingHalfNaN(uint16_t h) {
  return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0 && !(h & 0x200);
}

TEST(SimdTest, ConvertMatchesScalar) {
  REQUIRE_SIMD();
  const Kernels& ref = simd::KernelsFor(Isa::kScalar);
  for (Isa isa : SimdIsas()) {
    const Kernels& k = simd::KernelsFor(isa);
    for (DType from : kDTypes) {
      for (DType to : kDTypes) {
        if (from == to) continue;
        SCOPED_TRACE(std::string(simd::IsaName(isa)) + " " + std::string(DTypeName(from)) + "->" +
                     std::string(DTypeName(to)));
        // 16-bit inputs: all 65536 patterns; fp32: a sweep of the bit space plus random ones.
        std::vector<std::byte> src;
        if (DTypeSize(from) == 2) {
          for (uint32_t h = 0; h < 65536; ++h) {
            // Hardware fp16 -> fp32 quiets signaling NaNs; element_math keeps the payload as is.
            if (from == DType::kF16 && to == DType::kF32 &&
                IsSignalingHalfNaN(static_cast<uint16_t>(h)))
              continue;
            const uint16_t v = static_cast<uint16_t>(h);
            src.insert(src.end(), reinterpret_cast<const std::byte*>(&v),
                       reinterpret_cast<const std::byte*>(&v) + 2);
          }
        } else {
          for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) {
            const uint32_t v = static_cast<uint32_t>(u);
            src.insert(src.end(), reinterpret_cast<const std::byte*>(&v),
                       reinterpret_cast<const std::byte*>(&v) + 4);
          }
          const auto extra = test::RandomBytes(4 * 100003, 3);
          src.insert(src.end(), extra.begin(), extra.end());
        }
        const size_t n = src.size() / DTypeSize(from);
        for (size_t offset : {size_t{0}, size_t{1}}) {  // a tail of every length too
          std::vector<std::byte> a((n - offset) * DTypeSize(to)), b(a.size());
          ref.convert[simd::DTypeIndex(from)][simd::DTypeIndex(to)](
              src.data() + offset * DTypeSize(from), a.data(), n - offset);
          k.convert[simd::DTypeIndex(from)][simd::DTypeIndex(to)](
              src.data() + offset * DTypeSize(from), b.data(), n - offset);
          ASSERT_EQ(a, b);
        }
      }
    }
  }
}

TEST(SimdTest, PlanesMatchScalar) {
  REQUIRE_SIMD();
  const Kernels& ref = simd::KernelsFor(Isa::kScalar);
  auto rng = test::Rng(4);
  for (Isa isa : SimdIsas()) {
    const Kernels& k = simd::KernelsFor(isa);
    for (size_t s : {size_t{2}, size_t{4}}) {
      for (size_t n : {size_t{1}, size_t{7}, size_t{16}, size_t{33}, size_t{64}, size_t{1000}}) {
        const uint64_t total = n + 50, first = rng() % 50;
        const auto src = test::RandomBytes(n * s, rng());
        std::vector<uint8_t> pa(s * total, 0xaa), pb(pa);
        ref.plane[simd::PlaneIndex(s)](src.data(), n, pa.data(), total, first);
        k.plane[simd::PlaneIndex(s)](src.data(), n, pb.data(), total, first);
        ASSERT_EQ(pa, pb) << simd::IsaName(isa) << " size " << s << " n " << n;
        std::vector<std::byte> ua(n * s), ub(n * s);
        ref.unplane[simd::PlaneIndex(s)](pa.data(), total, first, n, ua.data());
        k.unplane[simd::PlaneIndex(s)](pa.data(), total, first, n, ub.data());
        ASSERT_EQ(ua, ub);
        EXPECT_EQ(ua, src) << "unplane inverts plane";
      }
    }
  }
}

TEST(SimdTest, QuantEncoderStepsMatchScalar) {
  REQUIRE_SIMD();
  const Kernels& ref = simd::KernelsFor(Isa::kScalar);
  auto rng = test::Rng(6);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (Isa isa : SimdIsas()) {
    const Kernels& k = simd::KernelsFor(isa);
    for (size_t n : {size_t{1}, size_t{7}, size_t{16}, size_t{33}, size_t{100}, size_t{1024}}) {
      std::vector<float> x(n);
      for (auto& v : x) v = normal(rng);
      // Signed zeros and exact ties: the order of comparisons must not show.
      for (size_t i = 0; i < n; i += 5) x[i] = (i % 10) ? 0.0f : -0.0f;
      // in_range: a bad value anywhere.
      EXPECT_EQ(k.in_range(x.data(), n), ref.in_range(x.data(), n));
      EXPECT_TRUE(k.in_range(x.data(), n));
      for (float bad : {std::nanf(""), INFINITY, -70000.0f, 65505.0f}) {
        auto y = x;
        y[rng() % n] = bad;
        EXPECT_FALSE(k.in_range(y.data(), n)) << simd::IsaName(isa) << " " << bad;
      }
      auto z = x;
      z[n - 1] = 65504.0f;
      EXPECT_TRUE(k.in_range(z.data(), n));
      // min_max.
      std::vector<float> lo1(n), hi1(n);
      for (size_t i = 0; i < n; ++i)
        lo1[i] = hi1[i] = (i % 3) ? normal(rng) : ((i % 2) ? 0.0f : -0.0f);
      auto lo2 = lo1, hi2 = hi1;
      ref.min_max(x.data(), n, lo1.data(), hi1.data());
      k.min_max(x.data(), n, lo2.data(), hi2.data());
      ASSERT_EQ(std::memcmp(lo1.data(), lo2.data(), 4 * n), 0) << simd::IsaName(isa);
      ASSERT_EQ(std::memcmp(hi1.data(), hi2.data(), 4 * n), 0);
      // group_range, with groups of zeros of both signs.
      for (uint32_t group : {1u, 5u, 8u, 16u, 32u, 48u, 1000u}) {
        auto w = x;
        for (size_t i = 0; i < n && i < group; ++i) w[i] = (i % 2) ? 0.0f : -0.0f;
        const size_t groups = (n + group - 1) / group;
        std::vector<float> a(groups), b(groups), c(groups), d(groups);
        ref.group_range(w.data(), n, group, a.data(), b.data());
        k.group_range(w.data(), n, group, c.data(), d.data());
        ASSERT_EQ(std::memcmp(a.data(), c.data(), 4 * groups), 0) << "group " << group;
        ASSERT_EQ(std::memcmp(b.data(), d.data(), 4 * groups), 0) << "group " << group;
      }
      // make_params from ranges.
      {
        std::vector<float> l(n), h(n);
        for (size_t i = 0; i < n; ++i) {
          const float a = normal(rng) * ((i % 7) ? 1.0f : 1000.0f), b = normal(rng);
          l[i] = std::min(a, b);
          h[i] = (i % 4) ? std::max(a, b) : l[i];  // some constant groups: scale 0
        }
        for (float maxq : {255.0f, 15.0f, 3.0f}) {
          std::vector<uint8_t> r1(4 * n), r2(4 * n);
          std::vector<float> s1(n), z1(n), s2(n), z2(n);
          ref.make_params(l.data(), h.data(), n, maxq, r1.data(), s1.data(), z1.data());
          k.make_params(l.data(), h.data(), n, maxq, r2.data(), s2.data(), z2.data());
          ASSERT_EQ(r1, r2) << simd::IsaName(isa) << " maxq " << maxq;
          ASSERT_EQ(std::memcmp(s1.data(), s2.data(), 4 * n), 0);
          ASSERT_EQ(std::memcmp(z1.data(), z2.data(), 4 * n), 0);
        }
      }
      // quantize: zero scales, subnormal scales, values far outside [zero, zero + maxq * scale].
      for (uint32_t bits : {8u, 4u, 2u}) {
        const float maxq = float((1u << bits) - 1);
        std::vector<float> sc(n), ze(n);
        for (size_t i = 0; i < n; ++i) {
          const uint32_t kind = static_cast<uint32_t>(rng() % 8);
          sc[i] = kind == 0   ? 0.0f
                  : kind == 1 ? elem::HalfToFloat(1)
                              : elem::HalfToFloat(elem::FloatToHalf(std::fabs(normal(rng)) / maxq));
          ze[i] = elem::HalfToFloat(elem::FloatToHalf(normal(rng)));
        }
        std::vector<uint8_t> q1(n), q2(n);
        ref.quantize(x.data(), n, sc.data(), ze.data(), maxq, q1.data());
        k.quantize(x.data(), n, sc.data(), ze.data(), maxq, q2.data());
        ASSERT_EQ(q1, q2) << simd::IsaName(isa) << " bits " << bits << " n " << n;
        for (uint32_t group : {1u, 5u, 16u, 32u, 40u}) {
          std::vector<uint8_t> g1(n), g2(n);
          ref.quantize_groups(x.data(), n, group, sc.data(), ze.data(), maxq, g1.data());
          k.quantize_groups(x.data(), n, group, sc.data(), ze.data(), maxq, g2.data());
          ASSERT_EQ(g1, g2) << simd::IsaName(isa) << " groups of " << group << " n " << n;
        }
        for (auto& c : q1) c &= static_cast<uint8_t>(maxq);
        const size_t bytes = (n * bits + 7) / 8;
        std::vector<uint8_t> p1(bytes + 1, 0xcc), p2(bytes + 1, 0xcc);
        ref.pack(q1.data(), n, bits, p1.data());
        k.pack(q1.data(), n, bits, p2.data());
        ASSERT_EQ(p1, p2) << simd::IsaName(isa) << " pack bits " << bits << " n " << n;
        EXPECT_EQ(p1[bytes], 0xcc) << "pack writes ceil(n * bits / 8) bytes";
        for (size_t i = 0; i < n; ++i)
          ASSERT_EQ(elem::UnpackCode(p1.data(), static_cast<uint32_t>(i), bits), q1[i]);
      }
    }
  }
}

// The whole codec pipeline (encode and decode of every codec, dtype and odd shape) gives the same
// bytes on every ISA.
TEST(SimdTest, CodecPipelineIsIdenticalOnEveryIsa) {
  REQUIRE_SIMD();
  auto run = [](Isa isa) {
    simd::SetActiveIsaForTesting(isa);
    std::vector<std::vector<std::byte>> out;
    for (const char* name :
         {"raw", "lossless", "q8", "q4", "q2", "q4:g48+zstd", "q8:g7", "q2:g16"}) {
      const CodecSpec codec = test::Codec(name);
      for (DType dt : kDTypes) {
        for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
          for (auto [t, c] : {std::pair{1u, 16u}, {37u, 24u}, {70u, 130u}, {64u, 1024u}}) {
            const BlockShape shape{t, c, dt};
            const auto src = test::RandomTensor(shape.elements(), dt, t * 131 + c, 2.0f);
            std::vector<std::byte> enc;
            EXPECT_TRUE(EncodeBlock(codec, kind, shape, src, &enc).ok());
            out.push_back(enc);
            for (DType o : kDTypes) {
              std::vector<std::byte> dec(shape.elements() * DTypeSize(o));
              EXPECT_TRUE(DecodeBlock(codec, kind, shape, enc, o, dec).ok());
              out.push_back(std::move(dec));
            }
          }
        }
      }
    }
    return out;
  };
  const auto reference = run(Isa::kScalar);
  for (Isa isa : SimdIsas()) {
    const auto got = run(isa);
    ASSERT_EQ(got.size(), reference.size());
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], reference[i]) << simd::IsaName(isa) << " case " << i;
  }
  simd::SetActiveIsaForTesting(simd::BestIsa());
}

// element_math.h's conversions are the hardware's where the hardware has them.
TEST(ElementMathTest, HalfConversionsAreExactAndRoundToNearestEven) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = elem::HalfToFloat(static_cast<uint16_t>(h));
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
      EXPECT_TRUE(std::isnan(f));
      continue;
    }
    ASSERT_EQ(elem::FloatToHalf(f), h) << "fp16 -> fp32 -> fp16 is the identity";
  }
  EXPECT_EQ(elem::FloatToHalf(65519.996f), 0x7bff);
  EXPECT_EQ(elem::FloatToHalf(65520.0f), 0x7c00);
  EXPECT_EQ(elem::FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie to even 0
  EXPECT_EQ(elem::FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(elem::FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie to even 2
  EXPECT_EQ(elem::FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(elem::Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(elem::Dequant(elem::FloatToHalf(0.5f), elem::FloatToHalf(-1.0f), 3), 0.5f);
}

}  // namespace
}  // namespace kdn
