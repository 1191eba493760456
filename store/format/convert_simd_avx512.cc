// AVX-512 dtype conversion: 16 elements per step, results equal to element_math.h's conversions
// (fp16 -> fp32 differs only in quieting signaling NaNs, as the hardware does).
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

template <DType I>
KDN_TARGET_AVX512 inline __m512 Load16(const void* src, size_t i) {
  if constexpr (I == DType::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(src) + i);
  } else {
    const __m256i h =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i));
    if constexpr (I == DType::kF16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <DType O>
KDN_TARGET_AVX512 inline void Store16(void* dst, size_t i, __m512 v) {
  if constexpr (O == DType::kF32) {
    _mm512_storeu_ps(static_cast<float*>(dst) + i, v);
  } else if constexpr (O == DType::kF16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(dst) + i),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(dst) + i),
                        _mm512_cvtepi32_epi16(x86::Bf16Bits16(_mm512_castps_si512(v))));
  }
}

template <DType I, DType O>
KDN_TARGET_AVX512 void Convert(const void* src, void* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) Store16<O>(dst, i, Load16<I>(src, i));
  scalar::ConvertRange<I, O>(src, dst, i, n);
}

}  // namespace

void FillConvertAvx512(Kernels* k) {
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
void FillConvertAvx512(Kernels*) {}
}  // namespace kdn::simd

#endif
