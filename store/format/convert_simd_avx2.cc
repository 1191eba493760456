// AVX2+F16C dtype conversion: 8 elements per step, results equal to element_math.h's conversions
// (fp16 -> fp32 differs only in quieting signaling NaNs, as the hardware does).
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

template <DType I>
KDN_TARGET_AVX2 inline __m256 Load8(const void* src, size_t i) {
  if constexpr (I == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(src) + i);
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(src) + i));
    if constexpr (I == DType::kF16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <DType O>
KDN_TARGET_AVX2 inline void Store8(void* dst, size_t i, __m256 v) {
  if constexpr (O == DType::kF32) {
    _mm256_storeu_ps(static_cast<float*>(dst) + i, v);
  } else if constexpr (O == DType::kF16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i),
                     x86::Narrow32To16(x86::Bf16Bits8(_mm256_castps_si256(v))));
  }
}

template <DType I, DType O>
KDN_TARGET_AVX2 void Convert(const void* src, void* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) Store8<O>(dst, i, Load8<I>(src, i));
  scalar::ConvertRange<I, O>(src, dst, i, n);
}

}  // namespace

void FillConvertAvx2(Kernels* k) {
  constexpr DType kF16 = DType::kF16, kBF16 = DType::kBF16, kF32 = DType::kF32;
  k->convert[DTypeIndex(kF16)][DTypeIndex(kBF16)] = Convert<kF16, kBF16>;
  k->convert[DTypeIndex(kF16)][DTypeIndex(kF32)] = Convert<kF16, kF32>;
  k->convert[DTypeIndex(kBF16)][DTypeIndex(kF16)] = Convert<kBF16, kF16>;
  k->convert[DTypeIndex(kBF16)][DTypeIndex(kF32)] = Convert<kBF16, kF32>;
  k->convert[DTypeIndex(kF32)][DTypeIndex(kF16)] = Convert<kF32, kF16>;
  k->convert[DTypeIndex(kF32)][DTypeIndex(kBF16)] = Convert<kF32, kBF16>;
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillConvertAvx2(Kernels*) {}
}  // namespace kdn::simd

#endif
