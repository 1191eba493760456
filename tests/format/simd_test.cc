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
            ASSERT_EQ(a, b) << simd::IsaName(isa) << " bits " << bits << " " << DTypeName(out)
                            << " channels " << channels;
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
            ASSERT_EQ(a, b) << simd::IsaName(isa) << " bits " << bits << " group " << group
                            << " channels " << channels;
          }
        }
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
