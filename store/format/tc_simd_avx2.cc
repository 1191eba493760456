// AVX2 tc kernels: rANS decode of eight interleaved lanes per step and the per-head rebuild
// (dequantization, Hadamard butterflies, mean, RoPE) eight values per step. Same bits as
// tc_math.h: every lane runs the scalar decoder's integer steps, renormalization words are handed
// to the lanes that need one in lane order (as the scalar decoder reads them), and every float
// operation is the reference's, with the same operands in the same order.
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

// For each mask of the eight lanes that read a word: lane i takes word popcount(mask below i) of
// the next eight words.
struct WordPermutations {
  alignas(8) uint8_t lane_word[256][8];
  constexpr WordPermutations() : lane_word{} {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int i = 0; i < 8; ++i) lane_word[m][i] = static_cast<uint8_t>(((m >> i) & 1) ? k++ : 0);
    }
  }
};
constexpr WordPermutations kWordPermutations;

KDN_TARGET_AVX2 bool DecodeSegmentAvx2(const tc::TcView& v, const TcChannels& ch, uint32_t seg,
                                       int16_t* q) {
  const uint8_t* p = v.segments + v.seg_begin[seg];
  const uint8_t* const end = v.segments + v.seg_begin[seg + 1];
  // Every failure of the scalar decoder makes its verdict false, so this one stops at the first.
  if (end - p < static_cast<long>(rans::kStateBytes) || ((end - p) & 1) != 0) return false;
  alignas(32) uint32_t x[kLanes];
  for (uint32_t i = 0; i < kLanes; ++i) {
    x[i] = rans::LoadU32Le(p + 4 * i);
    if (x[i] < kLower) return false;
  }
  p += rans::kStateBytes;
  const uint32_t C = v.channels;
  const uint64_t n = uint64_t{tc::SegmentTokens(v, seg)} * C;
  uint32_t lane = 0, c = 0;
  // One scalar symbol (rans.h's Decode and Renorm) on the current lane.
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
  const __m256i prob_mask = _mm256_set1_epi32(kProbScale - 1);
  const __m256i low8 = _mm256_set1_epi32(0xff);
  const __m256i low12 = _mm256_set1_epi32(0xfff);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i zero = _mm256_setzero_si256();
  uint64_t i = 0;
  while (i < n) {
    // Eight symbols at once when they start a group of eight lanes, belong to one row and the
    // stream holds the eight words they may read; an escape among them goes the scalar way.
    if ((lane & 7) == 0 && c + 8 <= C && end - p >= 16) {
      __m256i xs = _mm256_load_si256(reinterpret_cast<const __m256i*>(x + lane));
      const __m256i idx = _mm256_add_epi32(
          _mm256_and_si256(xs, prob_mask),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch.slot_base + c)));
      const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(v.slots), idx, 4);
      const __m256i sym = _mm256_and_si256(e, low8);
      const __m256i esc = _mm256_cmpeq_epi32(
          sym, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch.escape + c)));
      if (_mm256_testz_si256(esc, esc)) {
        const __m256i freq = _mm256_and_si256(_mm256_srli_epi32(e, 8), low12);
        xs = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srli_epi32(xs, kProbBits)),
                              _mm256_srli_epi32(e, 20));
        const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(xs, 16), zero);
        const int m = _mm256_movemask_ps(_mm256_castsi256_ps(need));
        const __m256i words =
            _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m256i perm = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kWordPermutations.lane_word[m])));
        const __m256i refill =
            _mm256_or_si256(_mm256_slli_epi32(xs, 16), _mm256_permutevar8x32_epi32(words, perm));
        xs = _mm256_blendv_epi8(xs, refill, need);
        _mm256_store_si256(reinterpret_cast<__m256i*>(x + lane), xs);
        p += 2 * __builtin_popcount(static_cast<unsigned>(m));
        const __m256i val = _mm256_xor_si256(_mm256_srli_epi32(sym, 1),
                                             _mm256_sub_epi32(zero, _mm256_and_si256(sym, one)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                         _mm_packs_epi32(_mm256_castsi256_si128(val),
                                         _mm256_extracti128_si256(val, 1)));
        lane = (lane + 8) & (kLanes - 1);
        i += 8;
        c += 8;
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

// tc::Hadamard of n (a power of two >= 8) values: the butterflies of distance 1, 2 and 4 inside
// each group of eight (a lane swap, then a + b in the lower and a - b in the upper lanes), then
// those of distance 8 and up between groups, stage after stage as the reference.
KDN_TARGET_AVX2 inline void HadamardAvx2(float* x, uint32_t n) {
  for (uint32_t d = 0; d < n; d += 8) {
    __m256 v = _mm256_loadu_ps(x + d);
    __m256 sw = _mm256_permute_ps(v, 0xB1);
    v = _mm256_blend_ps(_mm256_add_ps(v, sw), _mm256_sub_ps(sw, v), 0xAA);
    sw = _mm256_permute_ps(v, 0x4E);
    v = _mm256_blend_ps(_mm256_add_ps(v, sw), _mm256_sub_ps(sw, v), 0xCC);
    sw = _mm256_permute2f128_ps(v, v, 1);
    v = _mm256_blend_ps(_mm256_add_ps(v, sw), _mm256_sub_ps(sw, v), 0xF0);
    _mm256_storeu_ps(x + d, v);
  }
  for (uint32_t len = 8; len < n; len <<= 1) {
    for (uint32_t i = 0; i < n; i += len << 1) {
      for (uint32_t j = i; j < i + len; j += 8) {
        const __m256 a = _mm256_loadu_ps(x + j);
        const __m256 b = _mm256_loadu_ps(x + j + len);
        _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(x + j + len, _mm256_sub_ps(a, b));
      }
    }
  }
}

// RoPE of pair i of one head, as tc::ReconstructHead (for the pairs a vector step leaves over).
inline void RotatePair(const tc::TcView& v, const float* cs, uint32_t i, float* x) {
  const uint32_t pairs = v.rotary_dim / 2;
  const uint32_t a = v.rope_style == 2 ? 2 * i : i;
  const uint32_t b = v.rope_style == 2 ? 2 * i + 1 : i + pairs;
  const float c = cs[2 * i], s = cs[2 * i + 1];
  const float xa = x[a], xb = x[b];
  const float pa = xa * c, pb = xb * s;
  const float qa = xa * s, qb = xb * c;
  x[a] = pa - pb;
  x[b] = qa + qb;
}

KDN_TARGET_AVX2 void ReconstructRowAvx2(const tc::TcView& v, const int16_t* qrow, uint32_t t,
                                        float* x) {
  const uint32_t hd = v.head_dim;
  const uint32_t heads = v.channels / hd;
  if (hd % 8 != 0) {
    for (uint32_t h = 0; h < heads; ++h) tc::ReconstructHead(v, qrow, t, h, x + uint64_t{h} * hd);
    return;
  }
  const uint32_t pairs = v.rotary_dim / 2;
  const float* cs = pairs != 0 ? v.rope_cs + uint64_t{t} * pairs * 2 : nullptr;
  for (uint32_t h = 0; h < heads; ++h) {
    const uint64_t c0 = uint64_t{h} * hd;
    float* xh = x + c0;
    for (uint32_t d = 0; d < hd; d += 8) {
      const __m256 qf = _mm256_cvtepi32_ps(
          _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qrow + c0 + d))));
      _mm256_storeu_ps(xh + d, _mm256_mul_ps(qf, _mm256_loadu_ps(v.step + c0 + d)));
    }
    if (v.transform == tc::kTransformHadamard) HadamardAvx2(xh, hd);
    for (uint32_t d = 0; d < hd; d += 8) {
      _mm256_storeu_ps(xh + d,
                       _mm256_add_ps(_mm256_loadu_ps(xh + d), _mm256_loadu_ps(v.mean + c0 + d)));
    }
    if (pairs == 0) continue;
    uint32_t i = 0;
    if (v.rope_style == 2) {
      // Pairs (2i, 2i + 1): four per vector, cos and sin duplicated over each pair.
      for (; i + 4 <= pairs; i += 4) {
        const __m256 xv = _mm256_loadu_ps(xh + 2 * i);
        const __m256 csv = _mm256_loadu_ps(cs + 2 * i);
        const __m256 cv = _mm256_moveldup_ps(csv), sv = _mm256_movehdup_ps(csv);
        const __m256 sw = _mm256_permute_ps(xv, 0xB1);  // xb, xa per pair
        const __m256 xc = _mm256_mul_ps(xv, cv);        // xa * c, xb * c
        const __m256 ss = _mm256_mul_ps(sw, sv);        // xb * s, xa * s
        // Even lanes pa - pb, odd lanes qa + qb, operands in the reference's order.
        _mm256_storeu_ps(xh + 2 * i, _mm256_blend_ps(_mm256_sub_ps(xc, ss),
                                                     _mm256_add_ps(ss, xc), 0xAA));
      }
    } else {
      // Pairs (i, i + pairs): eight per vector, cos and sin taken apart from the table's pairs.
      for (; i + 8 <= pairs; i += 8) {
        const __m256 lo = _mm256_loadu_ps(cs + 2 * i), hi = _mm256_loadu_ps(cs + 2 * i + 8);
        const __m256 cv = _mm256_castpd_ps(
            _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
        const __m256 sv = _mm256_castpd_ps(
            _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
        const __m256 xa = _mm256_loadu_ps(xh + i), xb = _mm256_loadu_ps(xh + i + pairs);
        const __m256 pa = _mm256_mul_ps(xa, cv), pb = _mm256_mul_ps(xb, sv);
        const __m256 qa = _mm256_mul_ps(xa, sv), qb = _mm256_mul_ps(xb, cv);
        _mm256_storeu_ps(xh + i, _mm256_sub_ps(pa, pb));
        _mm256_storeu_ps(xh + i + pairs, _mm256_add_ps(qa, qb));
      }
    }
    for (; i < pairs; ++i) RotatePair(v, cs, i, xh);
  }
}

}  // namespace

void FillTcAvx2(Kernels* k) {
  k->tc_decode_segment = DecodeSegmentAvx2;
  k->tc_reconstruct_row = ReconstructRowAvx2;
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillTcAvx2(Kernels*) {}
}  // namespace kdn::simd

#endif
