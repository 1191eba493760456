// AVX-512 byte planes of the lossless codec (bit manipulation only: identical to the scalar code).
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

KDN_TARGET_AVX512 void Unplane2(const uint8_t* planes, uint64_t stride, uint64_t first, size_t n,
                                void* out) {
  const uint8_t* p0 = planes + first;
  const uint8_t* p1 = planes + stride + first;
  auto* o = static_cast<uint16_t*>(out);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i hi =
        _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0 + i)));
    const __m512i lo =
        _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1 + i)));
    const __m512i v = _mm512_or_si512(_mm512_slli_epi16(hi, 8), lo);
    const __m512i r = _mm512_or_si512(_mm512_srli_epi16(v, 1), _mm512_slli_epi16(v, 15));
    _mm512_storeu_si512(o + i, r);
  }
  scalar::UnplaneRange<2>(planes, stride, first, i, n, out);
}

// Bytes of plane `plane` for elements i.. as 32-bit lanes.
KDN_TARGET_AVX512 inline __m512i PlaneBytes(const uint8_t* p, uint64_t stride, size_t i,
                                            uint64_t plane) {
  return _mm512_cvtepu8_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + plane * stride + i)));
}

KDN_TARGET_AVX512 void Unplane4(const uint8_t* planes, uint64_t stride, uint64_t first, size_t n,
                                void* out) {
  const uint8_t* p = planes + first;
  auto* o = static_cast<uint32_t*>(out);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v =
        _mm512_or_si512(_mm512_or_si512(_mm512_slli_epi32(PlaneBytes(p, stride, i, 0), 24),
                                        _mm512_slli_epi32(PlaneBytes(p, stride, i, 1), 16)),
                        _mm512_or_si512(_mm512_slli_epi32(PlaneBytes(p, stride, i, 2), 8),
                                        PlaneBytes(p, stride, i, 3)));
    _mm512_storeu_si512(o + i, _mm512_ror_epi32(v, 1));
  }
  scalar::UnplaneRange<4>(planes, stride, first, i, n, out);
}

KDN_TARGET_AVX512 void Plane2(const void* src, size_t n, uint8_t* planes, uint64_t stride,
                              uint64_t first) {
  const auto* s = static_cast<const uint16_t*>(src);
  uint8_t* p0 = planes + first;
  uint8_t* p1 = planes + stride + first;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i v = _mm512_loadu_si512(s + i);
    const __m512i r = _mm512_or_si512(_mm512_slli_epi16(v, 1), _mm512_srli_epi16(v, 15));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p0 + i),
                        _mm512_cvtepi16_epi8(_mm512_srli_epi16(r, 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p1 + i), _mm512_cvtepi16_epi8(r));
  }
  scalar::PlaneRange<2>(src, i, n, planes, stride, first);
}

KDN_TARGET_AVX512 void Plane4(const void* src, size_t n, uint8_t* planes, uint64_t stride,
                              uint64_t first) {
  const auto* s = static_cast<const uint32_t*>(src);
  uint8_t* p = planes + first;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i r = _mm512_rol_epi32(_mm512_loadu_si512(s + i), 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i),
                     _mm512_cvtepi32_epi8(_mm512_srli_epi32(r, 24)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + stride + i),
                     _mm512_cvtepi32_epi8(_mm512_srli_epi32(r, 16)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 2 * stride + i),
                     _mm512_cvtepi32_epi8(_mm512_srli_epi32(r, 8)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 3 * stride + i), _mm512_cvtepi32_epi8(r));
  }
  scalar::PlaneRange<4>(src, i, n, planes, stride, first);
}

}  // namespace

void FillPlaneAvx512(Kernels* k) {
  k->unplane[0] = Unplane2;
  k->unplane[1] = Unplane4;
  k->plane[0] = Plane2;
  k->plane[1] = Plane4;
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillPlaneAvx512(Kernels*) {}
}  // namespace kdn::simd

#endif
