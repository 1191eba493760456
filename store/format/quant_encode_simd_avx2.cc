// AVX2 steps of the quant encoder. Every step is exact (comparisons, one subtraction and one
// division each rounded once, rounding to integer), so the codes equal the scalar encoder's.
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

KDN_TARGET_AVX2 inline __m256 Abs8(__m256 v) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

KDN_TARGET_AVX2 bool InRange(const float* x, size_t n) {
  const __m256 limit = _mm256_set1_ps(65504.0f);
  int bad = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    bad |= _mm256_movemask_ps(_mm256_cmp_ps(Abs8(_mm256_loadu_ps(x + i)), limit, _CMP_NLE_UQ));
  }
  return bad == 0 && scalar::InRange(x + i, n - i);
}

// vminps/vmaxps keep the second operand unless the first is strictly smaller/larger, as the
// scalar code does.
KDN_TARGET_AVX2 void MinMax(const float* x, size_t n, float* lo, float* hi) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(lo + i, _mm256_min_ps(v, _mm256_loadu_ps(lo + i)));
    _mm256_storeu_ps(hi + i, _mm256_max_ps(v, _mm256_loadu_ps(hi + i)));
  }
  scalar::MinMaxRange(x, i, n, lo, hi);
}

KDN_TARGET_AVX2 void GroupRange(const float* x, size_t n, uint32_t group, float* lo, float* hi) {
  size_t g = 0;
  for (size_t i0 = 0; i0 < n; i0 += group, ++g) {
    const size_t m = n - i0 < group ? n - i0 : group;
    if (m < 8) {
      scalar::RangeOf(x + i0, m, &lo[g], &hi[g]);
      continue;
    }
    __m256 a = _mm256_loadu_ps(x + i0), b = a;
    size_t i = 8;
    for (; i + 8 <= m; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i0 + i);
      a = _mm256_min_ps(v, a);
      b = _mm256_max_ps(v, b);
    }
    alignas(32) float la[8], hb[8];
    _mm256_store_ps(la, a);
    _mm256_store_ps(hb, b);
    float l = la[0], h = hb[0];
    for (int k = 1; k < 8; ++k) {
      l = la[k] < l ? la[k] : l;
      h = hb[k] > h ? hb[k] : h;
    }
    for (; i < m; ++i) {
      l = x[i0 + i] < l ? x[i0 + i] : l;
      h = x[i0 + i] > h ? x[i0 + i] : h;
    }
    if (l == 0.0f || h == 0.0f) scalar::RangeOf(x + i0, m, &l, &h);  // which zero: scalar order
    lo[g] = l;
    hi[g] = h;
  }
}

// vcvtps2ph rounds exactly as elem::FloatToHalf; vcvtph2ps widens exactly (the values are
// finite: the encoder checked its input).
KDN_TARGET_AVX2 void MakeParams(const float* lo, const float* hi, size_t n, float maxq,
                                uint8_t* records, float* scale, float* zero) {
  const __m256 vmax = _mm256_set1_ps(maxq);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 l = _mm256_loadu_ps(lo + i);
    const __m128i z = _mm256_cvtps_ph(l, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i s =
        _mm256_cvtps_ph(_mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(hi + i), l), vmax),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(records + 4 * i), _mm_unpacklo_epi16(s, z));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(records + 4 * i + 16), _mm_unpackhi_epi16(s, z));
    _mm256_storeu_ps(scale + i, _mm256_cvtph_ps(s));
    _mm256_storeu_ps(zero + i, _mm256_cvtph_ps(z));
  }
  scalar::MakeParamsRange(lo, hi, i, n, maxq, records, scale, zero);
}

// 8 codes from 8 values with their scales and zeros.
KDN_TARGET_AVX2 inline void Quantize8(const float* x, __m256 s, __m256 z, float maxq,
                                      uint8_t* codes) {
  const __m256 vzero = _mm256_setzero_ps();
  __m256 v = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x), z), s);
  v = _mm256_min_ps(_mm256_max_ps(v, vzero), _mm256_set1_ps(maxq));
  const __m256 magic = _mm256_set1_ps(8388608.0f);
  v = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
  v = _mm256_and_ps(v, _mm256_cmp_ps(s, vzero, _CMP_NEQ_UQ));  // code 0 where scale is 0
  const __m256i q = _mm256_cvttps_epi32(v);
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(codes), _mm_packus_epi16(w, w));
}

KDN_TARGET_AVX2 void Quantize(const float* x, size_t n, const float* scale, const float* zero,
                              float maxq, uint8_t* codes) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    Quantize8(x + i, _mm256_loadu_ps(scale + i), _mm256_loadu_ps(zero + i), maxq, codes + i);
  }
  scalar::QuantizeRange(x, i, n, scale, zero, maxq, codes);
}

KDN_TARGET_AVX2 void QuantizeGroups(const float* x, size_t n, uint32_t group, const float* scale,
                                    const float* zero, float maxq, uint8_t* codes) {
  size_t g = 0;
  for (size_t i0 = 0; i0 < n; i0 += group, ++g) {
    const size_t i1 = n - i0 < group ? n : i0 + group;
    const __m256 s = _mm256_set1_ps(scale[g]), z = _mm256_set1_ps(zero[g]);
    size_t i = i0;
    for (; i + 8 <= i1; i += 8) Quantize8(x + i, s, z, maxq, codes + i);
    for (; i < i1; ++i) codes[i] = scalar::QuantCode(x[i], scale[g], zero[g], maxq);
  }
}

KDN_TARGET_AVX2 void Pack(const uint8_t* codes, size_t n, uint32_t bits, uint8_t* out) {
  size_t i = 0;
  if (bits == 4) {
    for (; i + 16 <= n; i += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
      const __m128i pairs = _mm_maddubs_epi16(v, _mm_set1_epi16(0x1001));  // c0 + 16 c1
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i / 2), _mm_packus_epi16(pairs, pairs));
    }
  } else if (bits == 2) {
    for (; i + 16 <= n; i += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
      const __m128i pairs = _mm_maddubs_epi16(v, _mm_set1_epi16(0x0401));       // c0 + 4 c1
      const __m128i quads = _mm_madd_epi16(pairs, _mm_set1_epi32(0x00100001));  // p0 + 16 p1
      const __m128i w = _mm_packus_epi32(quads, quads);
      const uint32_t bytes = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_packus_epi16(w, w)));
      std::memcpy(out + i / 4, &bytes, 4);
    }
  }
  scalar::PackRange(codes, i, n, bits, out);
}

}  // namespace

void FillQuantEncodeAvx2(Kernels* k) {
  k->in_range = InRange;
  k->min_max = MinMax;
  k->group_range = GroupRange;
  k->make_params = MakeParams;
  k->quantize = Quantize;
  k->quantize_groups = QuantizeGroups;
  k->pack = Pack;
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillQuantEncodeAvx2(Kernels*) {}
}  // namespace kdn::simd

#endif
