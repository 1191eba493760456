// AVX2 byte planes of the lossless codec (bit manipulation only: identical to the scalar code).
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

KDN_TARGET_AVX2 void Unplane2(const uint8_t* planes, uint64_t stride, uint64_t first, size_t n,
                              void* out) {
  const uint8_t* p0 = planes + first;
  const uint8_t* p1 = planes + stride + first;
  auto* o = static_cast<uint16_t*>(out);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i hi =
        _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + i)));
    const __m256i lo =
        _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p1 + i)));
    const __m256i v = _mm256_or_si256(_mm256_slli_epi16(hi, 8), lo);
    const __m256i r = _mm256_or_si256(_mm256_srli_epi16(v, 1), _mm256_slli_epi16(v, 15));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), r);
  }
  scalar::UnplaneRange<2>(planes, stride, first, i, n, out);
}

// Bytes of plane `plane` for elements i.. as 32-bit lanes.
KDN_TARGET_AVX2 inline __m256i PlaneBytes(const uint8_t* p, uint64_t stride, size_t i,
                                          uint64_t plane) {
  return _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + plane * stride + i)));
}

KDN_TARGET_AVX2 void Unplane4(const uint8_t* planes, uint64_t stride, uint64_t first, size_t n,
                              void* out) {
  const uint8_t* p = planes + first;
  auto* o = static_cast<uint32_t*>(out);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v =
        _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(PlaneBytes(p, stride, i, 0), 24),
                                        _mm256_slli_epi32(PlaneBytes(p, stride, i, 1), 16)),
                        _mm256_or_si256(_mm256_slli_epi32(PlaneBytes(p, stride, i, 2), 8),
                                        PlaneBytes(p, stride, i, 3)));
    const __m256i r = _mm256_or_si256(_mm256_srli_epi32(v, 1), _mm256_slli_epi32(v, 31));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), r);
  }
  scalar::UnplaneRange<4>(planes, stride, first, i, n, out);
}

KDN_TARGET_AVX2 void Plane2(const void* src, size_t n, uint8_t* planes, uint64_t stride,
                            uint64_t first) {
  const auto* s = static_cast<const uint16_t*>(src);
  uint8_t* p0 = planes + first;
  uint8_t* p1 = planes + stride + first;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i r = _mm256_or_si256(_mm256_slli_epi16(v, 1), _mm256_srli_epi16(v, 15));
    const __m256i hi = _mm256_srli_epi16(r, 8);
    const __m256i lo = _mm256_and_si256(r, _mm256_set1_epi16(0xff));
    // Per 128-bit lane: [hi 8 bytes][lo 8 bytes]; then gather the hi halves and the lo halves.
    const __m256i packed =
        _mm256_permute4x64_epi64(_mm256_packus_epi16(hi, lo), _MM_SHUFFLE(3, 1, 2, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p0 + i), _mm256_castsi256_si128(packed));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p1 + i), _mm256_extracti128_si256(packed, 1));
  }
  scalar::PlaneRange<2>(src, i, n, planes, stride, first);
}

KDN_TARGET_AVX2 void Plane4(const void* src, size_t n, uint8_t* planes, uint64_t stride,
                            uint64_t first) {
  const auto* s = static_cast<const uint32_t*>(src);
  uint8_t* p = planes + first;
  // Per lane: byte 3 of its 4 elements, then byte 2, byte 1, byte 0.
  const __m256i gather = _mm256_setr_epi8(3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13, 0, 4, 8, 12,  //
                                          3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13, 0, 4, 8, 12);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i r = _mm256_or_si256(_mm256_slli_epi32(v, 1), _mm256_srli_epi32(v, 31));
    const __m256i planes8 = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(r, gather), order);
    alignas(32) uint64_t q[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(q), planes8);
    for (uint64_t k = 0; k < 4; ++k) std::memcpy(p + k * stride + i, &q[k], 8);
  }
  scalar::PlaneRange<4>(src, i, n, planes, stride, first);
}

}  // namespace

void FillPlaneAvx2(Kernels* k) {
  k->unplane[0] = Unplane2;
  k->unplane[1] = Unplane4;
  k->plane[0] = Plane2;
  k->plane[1] = Plane4;
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillPlaneAvx2(Kernels*) {}
}  // namespace kdn::simd

#endif
