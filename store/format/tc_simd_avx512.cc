// AVX-512 tc kernels: rANS decode of sixteen interleaved lanes per step (the renormalization
// words expanded into the lanes that need one, in lane order, as the scalar decoder reads them);
// the row rebuild is the AVX2 kernel's. Same bits as tc_math.h.
#include "store/format/simd.h"
#include "store/format/simd_x86.h"
#include "store/format/tc_math.h"

#if defined(__x86_64__)

namespace kdn::simd {

namespace {

using rans::kLanes;
using rans::kLower;
using rans::kProbBits;
using rans::kProbScale;

KDN_TARGET_AVX512 bool DecodeSegmentAvx512(const tc::TcView& v, const TcChannels& ch,
                                           uint32_t seg, int16_t* q) {
  const uint8_t* p = v.segments + v.seg_begin[seg];
  const uint8_t* const end = v.segments + v.seg_begin[seg + 1];
  // Every failure of the scalar decoder makes its verdict false, so this one stops at the first.
  if (end - p < static_cast<long>(rans::kStateBytes) || ((end - p) & 1) != 0) return false;
  alignas(64) uint32_t x[kLanes];
  for (uint32_t i = 0; i < kLanes; ++i) {
    x[i] = rans::LoadU32Le(p + 4 * i);
    if (x[i] < kLower) return false;
  }
  p += rans::kStateBytes;
  const uint32_t C = v.channels;
  const uint64_t n = uint64_t{tc::SegmentTokens(v, seg)} * C;
  uint32_t lane = 0, c = 0;
  auto renorm = [&](uint32_t xn) {
    if (xn < kLower) {
      if (end - p < 2) return false;
      xn = (xn << 16) | uint32_t{p[0]} | (uint32_t{p[1]} << 8);
      p += 2;
    }
    x[lane] = xn;
    lane = (lane + 1) & (kLanes - 1);
    return true;
  };
  const __m512i prob_mask = _mm512_set1_epi32(kProbScale - 1);
  const __m512i low8 = _mm512_set1_epi32(0xff);
  const __m512i low12 = _mm512_set1_epi32(0xfff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i zero = _mm512_setzero_si512();
  uint64_t i = 0;
  while (i < n) {
    // Sixteen symbols at once when they start a group of sixteen lanes, belong to one row and the
    // stream holds the sixteen words they may read; an escape among them goes the scalar way.
    if ((lane & 15) == 0 && c + 16 <= C && end - p >= 32) {
      __m512i xs = _mm512_load_si512(x + lane);
      const __m512i idx =
          _mm512_add_epi32(_mm512_and_si512(xs, prob_mask), _mm512_loadu_si512(ch.slot_base + c));
      const __m512i e = _mm512_i32gather_epi32(idx, v.slots, 4);
      const __m512i sym = _mm512_and_si512(e, low8);
      if (_mm512_cmpeq_epi32_mask(sym, _mm512_loadu_si512(ch.escape + c)) == 0) {
        const __m512i freq = _mm512_and_si512(_mm512_srli_epi32(e, 8), low12);
        xs = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32(xs, kProbBits)),
                              _mm512_srli_epi32(e, 20));
        const __mmask16 need = _mm512_cmplt_epu32_mask(xs, _mm512_set1_epi32(kLower));
        const __m512i words =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        xs = _mm512_mask_or_epi32(xs, need, _mm512_slli_epi32(xs, 16),
                                  _mm512_maskz_expand_epi32(need, words));
        _mm512_store_si512(x + lane, xs);
        p += 2 * __builtin_popcount(static_cast<unsigned>(need));
        const __m512i val = _mm512_xor_si512(_mm512_srli_epi32(sym, 1),
                                             _mm512_sub_epi32(zero, _mm512_and_si512(sym, one)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm512_cvtepi32_epi16(val));
        lane = (lane + 16) & (kLanes - 1);
        i += 16;
        c += 16;
        if (c == C) c = 0;
        continue;
      }
    }
    // One value the scalar way: its symbol, and after an escape the two bytes of the value.
    const uint32_t* slots = v.slots + ch.slot_base[c];
    uint32_t xs = x[lane];
    const uint32_t e = slots[xs & (kProbScale - 1)];
    if (!renorm(((e >> 8) & 0xfffu) * (xs >> kProbBits) + (e >> 20))) return false;
    uint32_t z = e & 0xffu;
    if (z == ch.escape[c]) {
      uint32_t bytes[2];
      for (uint32_t& b : bytes) {
        xs = x[lane];
        const uint32_t slot = xs & (kProbScale - 1);
        if (!renorm(16u * (xs >> kProbBits) + (slot & 15u))) return false;
        b = slot >> 4;
      }
      z = bytes[0] | (bytes[1] << 8);
    }
    q[i] = static_cast<int16_t>(tc::UnZigzag(z));
    ++i;
    if (++c == C) c = 0;
  }
  if (p != end) return false;
  for (uint32_t l = 0; l < kLanes; ++l) {
    if (x[l] != kLower) return false;
  }
  return true;
}

}  // namespace

void FillTcAvx512(Kernels* k) {
  FillTcAvx2(k);
  k->tc_decode_segment = DecodeSegmentAvx512;
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillTcAvx512(Kernels*) {}
}  // namespace kdn::simd

#endif
