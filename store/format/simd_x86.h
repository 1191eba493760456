// Shared pieces of the x86 SIMD kernels: target attributes and the bfloat16 rounding that matches
// elem::FloatToBf16 (the hardware vcvtneps2bf16 flushes subnormals, so it is not used).
#ifndef KDN_STORE_FORMAT_SIMD_X86_H_
#define KDN_STORE_FORMAT_SIMD_X86_H_

#if defined(__x86_64__)
// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 intrinsics
// (GCC bug 105593); the warning is about the system header, not about this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define KDN_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#define KDN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))

namespace kdn::x86 {

// Round-to-nearest-even to bfloat16 of 16 floats given as their bits, NaN kept quiet, in the low
// 16 bits of each lane.
KDN_TARGET_AVX512 inline __m512i Bf16Bits16(__m512i u) {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_blend_epi32(nan, rounded, quiet);
}

KDN_TARGET_AVX2 inline __m256i Bf16Bits8(__m256i u) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  // abs <= 0x7fffffff, so the signed comparison is the unsigned one.
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

// 8 lanes of values <= 0xffff to 8 u16.
KDN_TARGET_AVX2 inline __m128i Narrow32To16(__m256i v) {
  return _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

}  // namespace kdn::x86

#endif  // __x86_64__
#endif  // KDN_STORE_FORMAT_SIMD_X86_H_
