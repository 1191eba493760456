// AVX-512 dequantization of one row: 16 channels per step, the same multiply-then-add as
// elem::DequantWide, conversions that match element_math.h bit for bit.
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

// Codes of 16 consecutive channels, the first at a byte boundary, as floats.
template <uint32_t B>
KDN_TARGET_AVX512 inline __m512 Codes16(const uint8_t* p) {
  if constexpr (B == 8) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else if constexpr (B == 4) {
    const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    const __m128i m = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(x, m);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
  } else {
    uint32_t w;
    std::memcpy(&w, p, 4);
    const __m512i shifts =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i q = _mm512_and_si512(
        _mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(w)), shifts), _mm512_set1_epi32(3));
    return _mm512_cvtepi32_ps(q);
  }
}

template <DType O>
KDN_TARGET_AVX512 inline void Store16(void* out, uint32_t c, __m512 v) {
  if constexpr (O == DType::kF32) {
    _mm512_storeu_ps(static_cast<float*>(out) + c, v);
  } else if constexpr (O == DType::kF16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(out) + c),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(out) + c),
                        _mm512_cvtepi32_epi16(x86::Bf16Bits16(_mm512_castps_si512(v))));
  }
}

template <uint32_t B, DType O>
KDN_TARGET_AVX512 void DequantChannels(const uint8_t* codes, uint32_t channels, const float* scale,
                                       const float* zero, void* out) {
  uint32_t c = 0;
  for (; c + 32 <= channels; c += 32) {
    const __m512 v0 =
        _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(scale + c), Codes16<B>(codes + c * B / 8)),
                      _mm512_loadu_ps(zero + c));
    const __m512 v1 = _mm512_add_ps(
        _mm512_mul_ps(_mm512_loadu_ps(scale + c + 16), Codes16<B>(codes + (c + 16) * B / 8)),
        _mm512_loadu_ps(zero + c + 16));
    Store16<O>(out, c, v0);
    Store16<O>(out, c + 16, v1);
  }
  for (; c + 16 <= channels; c += 16) {
    const __m512 v =
        _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(scale + c), Codes16<B>(codes + c * B / 8)),
                      _mm512_loadu_ps(zero + c));
    Store16<O>(out, c, v);
  }
  scalar::DequantChannelsRange<B, O>(codes, c, channels, scale, zero, out);
}

// Requires group % 16 == 0, so every 16-channel step starts on a byte boundary.
template <uint32_t B, DType O>
KDN_TARGET_AVX512 void DequantGroups(const uint8_t* codes, uint32_t channels, const uint8_t* params,
                                     uint32_t group, void* out) {
  uint32_t g = 0;
  for (uint32_t c0 = 0; c0 < channels; c0 += group, ++g) {
    const float s = elem::HalfToFloat(scalar::LoadU16(params + 4 * size_t{g}));
    const float z = elem::HalfToFloat(scalar::LoadU16(params + 4 * size_t{g} + 2));
    const __m512 vs = _mm512_set1_ps(s);
    const __m512 vz = _mm512_set1_ps(z);
    const uint32_t c1 = channels - c0 < group ? channels : c0 + group;
    uint32_t c = c0;
    for (; c + 16 <= c1; c += 16) {
      Store16<O>(out, c, _mm512_add_ps(_mm512_mul_ps(vs, Codes16<B>(codes + c * B / 8)), vz));
    }
    scalar::DequantConstRange<B, O>(codes, c, c1, s, z, out);
  }
}

template <uint32_t B>
void FillBits(Kernels* k) {
  const int b = BitsIndex(B);
  k->dequant_channels[b][DTypeIndex(DType::kF16)] = DequantChannels<B, DType::kF16>;
  k->dequant_channels[b][DTypeIndex(DType::kBF16)] = DequantChannels<B, DType::kBF16>;
  k->dequant_channels[b][DTypeIndex(DType::kF32)] = DequantChannels<B, DType::kF32>;
  k->dequant_groups[b][DTypeIndex(DType::kF16)] = DequantGroups<B, DType::kF16>;
  k->dequant_groups[b][DTypeIndex(DType::kBF16)] = DequantGroups<B, DType::kBF16>;
  k->dequant_groups[b][DTypeIndex(DType::kF32)] = DequantGroups<B, DType::kF32>;
}

}  // namespace

void FillQuantAvx512(Kernels* k) {
  k->group_multiple = 16;
  FillBits<8>(k);
  FillBits<4>(k);
  FillBits<2>(k);
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillQuantAvx512(Kernels*) {}
}  // namespace kdn::simd

#endif
