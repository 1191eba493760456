// AVX-512 steps of the quant encoder. Every step is exact (comparisons, one subtraction and one
// division each rounded once, rounding to integer), so the codes equal the scalar encoder's.
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

KDN_TARGET_AVX512 bool InRange(const float* x, size_t n) {
  const __m512 limit = _mm512_set1_ps(65504.0f);
  __mmask16 bad = 0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // Not (|x| <= limit), unordered: true for NaN.
    bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + i)), limit, _CMP_NLE_UQ);
  }
  return bad == 0 && scalar::InRange(x + i, n - i);
}

// vminps/vmaxps return the second operand unless the first is strictly smaller/larger: the same
// choice as the scalar `x < lo ? x : lo`, signed zeros included.
KDN_TARGET_AVX512 void MinMax(const float* x, size_t n, float* lo, float* hi) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    _mm512_storeu_ps(lo + i, _mm512_min_ps(v, _mm512_loadu_ps(lo + i)));
    _mm512_storeu_ps(hi + i, _mm512_max_ps(v, _mm512_loadu_ps(hi + i)));
  }
  scalar::MinMaxRange(x, i, n, lo, hi);
}

KDN_TARGET_AVX512 void GroupRange(const float* x, size_t n, uint32_t group, float* lo, float* hi) {
  size_t g = 0;
  for (size_t i0 = 0; i0 < n; i0 += group, ++g) {
    const size_t m = n - i0 < group ? n - i0 : group;
    if (m < 16) {
      scalar::RangeOf(x + i0, m, &lo[g], &hi[g]);
      continue;
    }
    __m512 a = _mm512_loadu_ps(x + i0), b = a;
    size_t i = 16;
    for (; i + 16 <= m; i += 16) {
      const __m512 v = _mm512_loadu_ps(x + i0 + i);
      a = _mm512_min_ps(v, a);
      b = _mm512_max_ps(v, b);
    }
    float l = _mm512_reduce_min_ps(a), h = _mm512_reduce_max_ps(b);
    for (; i < m; ++i) {
      l = x[i0 + i] < l ? x[i0 + i] : l;
      h = x[i0 + i] > h ? x[i0 + i] : h;
    }
    // Which zero is the minimum (+0 or -0) depends on the order of comparisons: take the
    // scalar order then.
    if (l == 0.0f || h == 0.0f) {
      scalar::RangeOf(x + i0, m, &l, &h);
    }
    lo[g] = l;
    hi[g] = h;
  }
}

// vcvtps2ph rounds exactly as elem::FloatToHalf; vcvtph2ps widens exactly (the values are
// finite: the encoder checked its input).
KDN_TARGET_AVX512 void MakeParams(const float* lo, const float* hi, size_t n, float maxq,
                                  uint8_t* records, float* scale, float* zero) {
  const __m512 vmax = _mm512_set1_ps(maxq);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 l = _mm512_loadu_ps(lo + i);
    const __m256i z = _mm512_cvtps_ph(l, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i s =
        _mm512_cvtps_ph(_mm512_div_ps(_mm512_sub_ps(_mm512_loadu_ps(hi + i), l), vmax),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i rec =
        _mm512_or_si512(_mm512_cvtepu16_epi32(s), _mm512_slli_epi32(_mm512_cvtepu16_epi32(z), 16));
    _mm512_storeu_si512(records + 4 * i, rec);
    _mm512_storeu_ps(scale + i, _mm512_cvtph_ps(s));
    _mm512_storeu_ps(zero + i, _mm512_cvtph_ps(z));
  }
  scalar::MakeParamsRange(lo, hi, i, n, maxq, records, scale, zero);
}

// W codes from W values with their scales and zeros.
KDN_TARGET_AVX512 inline void Quantize16(const float* x, __m512 s, __m512 z, float maxq,
                                         uint8_t* codes) {
  const __m512 vzero = _mm512_setzero_ps();
  __m512 v = _mm512_div_ps(_mm512_sub_ps(_mm512_loadu_ps(x), z), s);
  v = _mm512_min_ps(_mm512_max_ps(v, vzero), _mm512_set1_ps(maxq));
  const __m512 magic = _mm512_set1_ps(8388608.0f);
  v = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
  const __mmask16 nonzero = _mm512_cmp_ps_mask(s, vzero, _CMP_NEQ_UQ);
  const __m512i q = _mm512_maskz_cvttps_epi32(nonzero, v);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(q));
}

KDN_TARGET_AVX512 void Quantize(const float* x, size_t n, const float* scale, const float* zero,
                                float maxq, uint8_t* codes) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Quantize16(x + i, _mm512_loadu_ps(scale + i), _mm512_loadu_ps(zero + i), maxq, codes + i);
  }
  scalar::QuantizeRange(x, i, n, scale, zero, maxq, codes);
}

KDN_TARGET_AVX512 void QuantizeGroups(const float* x, size_t n, uint32_t group, const float* scale,
                                      const float* zero, float maxq, uint8_t* codes) {
  size_t g = 0;
  for (size_t i0 = 0; i0 < n; i0 += group, ++g) {
    const size_t i1 = n - i0 < group ? n : i0 + group;
    const __m512 s = _mm512_set1_ps(scale[g]), z = _mm512_set1_ps(zero[g]);
    size_t i = i0;
    for (; i + 16 <= i1; i += 16) Quantize16(x + i, s, z, maxq, codes + i);
    for (; i < i1; ++i) codes[i] = scalar::QuantCode(x[i], scale[g], zero[g], maxq);
  }
}

KDN_TARGET_AVX512 void Pack(const uint8_t* codes, size_t n, uint32_t bits, uint8_t* out) {
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

void FillQuantEncodeAvx512(Kernels* k) {
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
void FillQuantEncodeAvx512(Kernels*) {}
}  // namespace kdn::simd

#endif
