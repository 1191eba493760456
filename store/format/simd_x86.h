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
#define KDN_TARGET_AVX512BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,f16c")))

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

// Same rounding, the bfloat16 left in the high 16 bits of each lane (for a word permute that
// gathers 32 of them at once).
KDN_TARGET_AVX512 inline __m512i Bf16High16(__m512i u) {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
  const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
}

// 32 floats to 32 bfloat16, rounded as elem::FloatToBf16.
KDN_TARGET_AVX512 inline __m512i Bf16x32(__m512 a, __m512 b) {
  const __m512i odd =
      _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                       25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  return _mm512_permutex2var_epi16(Bf16High16(_mm512_castps_si512(a)), odd,
                                   Bf16High16(_mm512_castps_si512(b)));
}

// With AVX512-BF16: vcvtne2ps2bf16 rounds to nearest even and quiets NaNs exactly as
// elem::FloatToBf16 does, but treats subnormal inputs as zero; those take the integer path.
KDN_TARGET_AVX512BF16 inline __m512i Bf16x32Hw(__m512 a, __m512 b) {
  const __mmask16 sub = _mm512_fpclass_ps_mask(a, 0x20) | _mm512_fpclass_ps_mask(b, 0x20);
  if (__builtin_expect(sub != 0, 0)) return Bf16x32(a, b);
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a));
}

KDN_TARGET_AVX512BF16 inline __m256i Bf16x16Hw(__m512 a) {
  if (__builtin_expect(_mm512_fpclass_ps_mask(a, 0x20) != 0, 0)) {
    return _mm512_cvtepi32_epi16(Bf16Bits16(_mm512_castps_si512(a)));
  }
  return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(a));
}

// 16 parameter records {scale fp16, zero fp16} widened to floats (vcvtph2ps: exact; it quiets
// signaling NaNs, which any arithmetic on them would do anyway, so decoded values are unchanged).
KDN_TARGET_AVX512 inline void WidenParams16(const void* rec, __m512* scale, __m512* zero) {
  const __m512i v = _mm512_loadu_si512(rec);
  *scale = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
  *zero = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
}

KDN_TARGET_AVX2 inline void WidenParams8(const void* rec, __m256* scale, __m256* zero) {
  const __m256i v = _mm256_loadu_si256(static_cast<const __m256i*>(rec));
  const __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
  const __m256i hi = _mm256_srli_epi32(v, 16);
  *scale = _mm256_cvtph_ps(
      _mm_packus_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1)));
  *zero = _mm256_cvtph_ps(
      _mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1)));
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
