// AVX2+F16C dequantization of one row: 8 channels per step, the same multiply-then-add as
// elem::DequantWide, conversions that match element_math.h bit for bit.
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

// Codes of 8 consecutive channels, the first at a byte boundary, as floats.
template <uint32_t B>
KDN_TARGET_AVX2 inline __m256 Codes8(const uint8_t* p) {
  if constexpr (B == 8) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  } else if constexpr (B == 4) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    return _mm256_cvtepi32_ps(_mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(w)), shifts), _mm256_set1_epi32(0xf)));
  } else {
    uint16_t w;
    std::memcpy(&w, p, 2);
    const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    return _mm256_cvtepi32_ps(
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w), shifts), _mm256_set1_epi32(3)));
  }
}

template <DType O>
KDN_TARGET_AVX2 inline void Store8(void* out, uint32_t c, __m256 v) {
  if constexpr (O == DType::kF32) {
    _mm256_storeu_ps(static_cast<float*>(out) + c, v);
  } else if constexpr (O == DType::kF16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + c),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + c),
                     x86::Narrow32To16(x86::Bf16Bits8(_mm256_castps_si256(v))));
  }
}

template <uint32_t B, DType O>
KDN_TARGET_AVX2 void DequantChannels(const uint8_t* codes, uint32_t channels, const float* scale,
                                     const float* zero, void* out) {
  uint32_t c = 0;
  for (; c + 8 <= channels; c += 8) {
    const __m256 v =
        _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(scale + c), Codes8<B>(codes + c * B / 8)),
                      _mm256_loadu_ps(zero + c));
    Store8<O>(out, c, v);
  }
  scalar::DequantChannelsRange<B, O>(codes, c, channels, scale, zero, out);
}

KDN_TARGET_AVX2 void WidenParams(const uint8_t* rec, size_t n, float* scale, float* zero) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 s, z;
    x86::WidenParams8(rec + 4 * i, &s, &z);
    _mm256_storeu_ps(scale + i, s);
    _mm256_storeu_ps(zero + i, z);
  }
  scalar::WidenParams(rec + 4 * i, n - i, scale + i, zero + i);
}

// Requires group % 8 == 0, so every 8-channel step starts on a byte boundary.
template <uint32_t B, DType O>
KDN_TARGET_AVX2 void DequantGroups(const uint8_t* codes, uint32_t channels, const uint8_t* params,
                                   uint32_t group, void* out) {
  constexpr uint32_t kChunk = 64;  // groups whose parameters are widened at once
  alignas(32) float s[kChunk], z[kChunk];
  const uint32_t groups = (channels + group - 1) / group;
  for (uint32_t g0 = 0; g0 < groups; g0 += kChunk) {
    const uint32_t n = groups - g0 < kChunk ? groups - g0 : kChunk;
    WidenParams(params + 4 * size_t{g0}, n, s, z);
    for (uint32_t i = 0; i < n; ++i) {
      const __m256 vs = _mm256_set1_ps(s[i]);
      const __m256 vz = _mm256_set1_ps(z[i]);
      const uint32_t c0 = (g0 + i) * group;
      const uint32_t c1 = channels - c0 < group ? channels : c0 + group;
      uint32_t c = c0;
      for (; c + 8 <= c1; c += 8) {
        Store8<O>(out, c, _mm256_add_ps(_mm256_mul_ps(vs, Codes8<B>(codes + c * B / 8)), vz));
      }
      scalar::DequantConstRange<B, O>(codes, c, c1, s[i], z[i], out);
    }
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

void FillQuantAvx2(Kernels* k) {
  k->group_multiple = 8;
  k->widen_params = WidenParams;
  FillBits<8>(k);
  FillBits<4>(k);
  FillBits<2>(k);
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillQuantAvx2(Kernels*) {}
}  // namespace kdn::simd

#endif
