// AVX-512 tc kernels: rANS decode of sixteen interleaved lanes per step (the renormalization
// words expanded into the lanes that need one, in lane order, as the scalar decoder reads them),
// and the row rebuild of heads of 16..256 values with the whole head in registers (dequantization,
// Hadamard butterflies, mean, RoPE, narrowing to the output dtype), written once to the output.
// Same bits as tc_math.h: every float operation is the reference's, same operands, same order,
// each rounded on its own (see Unfused).
#include "kdn/codec.h"
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

// One segment being decoded: where its stream is, the next value (i of n, channel c) and the
// lane whose turn it is. Between vector groups the states live in two registers (the sixteen lanes
// whose turn it is, then the other sixteen); the scalar steps work on x.
struct SegmentStream {
  alignas(64) uint32_t x[kLanes];
  const uint8_t* p = nullptr;
  const uint8_t* end = nullptr;
  int16_t* q = nullptr;
  uint64_t i = 0, n = 0;
  uint32_t c = 0, lane = 0;
};

// The segment's states, as the scalar decoder's constructor reads them. False where it fails.
inline bool Open(const tc::TcView& v, uint32_t seg, int16_t* q, SegmentStream* s) {
  s->p = v.segments + v.seg_begin[seg];
  s->end = v.segments + v.seg_begin[seg + 1];
  if (s->end - s->p < static_cast<long>(rans::kStateBytes) || ((s->end - s->p) & 1) != 0) {
    return false;
  }
  for (uint32_t l = 0; l < kLanes; ++l) {
    s->x[l] = rans::LoadU32Le(s->p + 4 * l);
    if (s->x[l] < kLower) return false;
  }
  s->p += rans::kStateBytes;
  s->q = q;
  s->i = 0;
  s->n = uint64_t{tc::SegmentTokens(v, seg)} * v.channels;
  s->c = 0;
  s->lane = 0;
  return true;
}

// The scalar decoder's verdict at the end: every word read, every state back at L.
inline bool Closed(const SegmentStream& s) {
  if (s.p != s.end) return false;
  for (uint32_t l = 0; l < kLanes; ++l) {
    if (s.x[l] != kLower) return false;
  }
  return true;
}

// Whether the next sixteen symbols may go the vector way: they start a group of sixteen lanes,
// belong to one row, and the stream holds the sixteen words they may read.
__attribute__((always_inline)) inline bool VectorReady(const SegmentStream& s, uint32_t channels) {
  return s.i < s.n && (s.lane & 15) == 0 && s.c + 16 <= channels && s.end - s.p >= 32;
}

// Sixteen symbols at once on the lanes in `cur` (VectorReady holds); `next` holds the other
// sixteen lanes, and the two swap for the following group. False, with nothing changed, when an
// escape is among them (those go the scalar way).
// Inlined always: the two registers must not go through memory on each call.
KDN_TARGET_AVX512 __attribute__((always_inline)) inline bool VectorGroup(
    const tc::TcView& v, const TcChannels& ch, SegmentStream& s, __m512i& cur, __m512i& next) {
  const __m512i idx = _mm512_add_epi32(_mm512_and_si512(cur, _mm512_set1_epi32(kProbScale - 1)),
                                       _mm512_loadu_si512(ch.slot_base + s.c));
  // (The masked form: GCC 12 reports the plain one's undefined merge source as uninitialized
  // once inlined.)
  const __m512i e = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), 0xFFFF, idx, v.slots, 4);
  const __m512i sym = _mm512_and_si512(e, _mm512_set1_epi32(0xff));
  if (_mm512_cmpeq_epi32_mask(sym, _mm512_loadu_si512(ch.escape + s.c)) != 0) return false;
  const __m512i freq = _mm512_and_si512(_mm512_srli_epi32(e, 8), _mm512_set1_epi32(0xfff));
  __m512i xs = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32(cur, kProbBits)),
                                _mm512_srli_epi32(e, 20));
  const __mmask16 need = _mm512_cmplt_epu32_mask(xs, _mm512_set1_epi32(kLower));
  const __m512i words =
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.p)));
  xs = _mm512_mask_or_epi32(xs, need, _mm512_slli_epi32(xs, 16),
                            _mm512_maskz_expand_epi32(need, words));
  s.p += 2 * __builtin_popcount(static_cast<unsigned>(need));
  const __m512i val = _mm512_xor_si512(
      _mm512_srli_epi32(sym, 1),
      _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_and_si512(sym, _mm512_set1_epi32(1))));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(s.q + s.i), _mm512_cvtepi32_epi16(val));
  cur = next;
  next = xs;
  s.lane = (s.lane + 16) & (kLanes - 1);
  s.i += 16;
  s.c += 16;
  if (s.c == v.channels) s.c = 0;
  return true;
}

KDN_TARGET_AVX512 inline void LoadStates(const SegmentStream& s, __m512i* cur, __m512i* next) {
  *cur = _mm512_load_si512(s.x + s.lane);
  *next = _mm512_load_si512(s.x + (s.lane ^ 16));
}
KDN_TARGET_AVX512 inline void StoreStates(SegmentStream& s, __m512i cur, __m512i next) {
  _mm512_store_si512(s.x + s.lane, cur);
  _mm512_store_si512(s.x + (s.lane ^ 16), next);
}

// One value the scalar way (rans.h's Decode, and after an escape the two bytes of the value).
// False where the stream runs out.
inline bool ScalarValue(const tc::TcView& v, const TcChannels& ch, SegmentStream& s) {
  auto renorm = [&](uint32_t xn) {
    if (xn < kLower) {
      if (s.end - s.p < 2) return false;
      xn = (xn << 16) | uint32_t{s.p[0]} | (uint32_t{s.p[1]} << 8);
      s.p += 2;
    }
    s.x[s.lane] = xn;
    s.lane = (s.lane + 1) & (kLanes - 1);
    return true;
  };
  const uint32_t* slots = v.slots + ch.slot_base[s.c];
  uint32_t xs = s.x[s.lane];
  const uint32_t e = slots[xs & (kProbScale - 1)];
  if (!renorm(((e >> 8) & 0xfffu) * (xs >> kProbBits) + (e >> 20))) return false;
  uint32_t z = e & 0xffu;
  if (z == ch.escape[s.c]) {
    uint32_t bytes[2];
    for (uint32_t& b : bytes) {
      xs = s.x[s.lane];
      const uint32_t slot = xs & (kProbScale - 1);
      if (!renorm(16u * (xs >> kProbBits) + (slot & 15u))) return false;
      b = slot >> 4;
    }
    z = bytes[0] | (bytes[1] << 8);
  }
  s.q[s.i] = static_cast<int16_t>(tc::UnZigzag(z));
  ++s.i;
  if (++s.c == v.channels) s.c = 0;
  return true;
}

// The rest of one segment: vector groups while they may, else one value the scalar way.
KDN_TARGET_AVX512 bool DecodeRest(const tc::TcView& v, const TcChannels& ch, SegmentStream& s) {
  while (s.i < s.n) {
    if (VectorReady(s, v.channels)) {
      __m512i cur, next;
      LoadStates(s, &cur, &next);
      bool went = false;
      while (VectorReady(s, v.channels) && VectorGroup(v, ch, s, cur, next)) went = true;
      StoreStates(s, cur, next);
      if (went) continue;
    }
    // Every failure of the scalar decoder makes its verdict false, so this one stops at the first.
    if (!ScalarValue(v, ch, s)) return false;
  }
  return Closed(s);
}

KDN_TARGET_AVX512 bool DecodeSegmentAvx512(const tc::TcView& v, const TcChannels& ch, uint32_t seg,
                                           int16_t* q) {
  SegmentStream s;
  return Open(v, seg, q, &s) && DecodeRest(v, ch, s);
}

// Two segments at once: each state's chain of dependent steps (gather, multiply, refill) is long,
// and one segment has only two groups of lanes to overlap; the groups of two independent
// segments interleaved keep four chains in flight. Each stream is decoded exactly as alone.
KDN_TARGET_AVX512 void DecodeSegmentPairAvx512(const tc::TcView& v, const TcChannels& ch,
                                               uint32_t seg, int16_t* q0, int16_t* q1, bool* ok) {
  SegmentStream s0, s1;
  ok[0] = Open(v, seg, q0, &s0);
  ok[1] = Open(v, seg + 1, q1, &s1);
  const uint32_t C = v.channels;
  bool esc0 = false, esc1 = false;  // the stream's next group holds an escape
  while (ok[0] && ok[1] && s0.i < s0.n && s1.i < s1.n) {
    if (!esc0 && !esc1 && VectorReady(s0, C) && VectorReady(s1, C)) {
      __m512i cur0, next0, cur1, next1;
      LoadStates(s0, &cur0, &next0);
      LoadStates(s1, &cur1, &next1);
      while (VectorReady(s0, C) && VectorReady(s1, C)) {
        if (!VectorGroup(v, ch, s0, cur0, next0)) {
          esc0 = true;
          break;
        }
        if (!VectorGroup(v, ch, s1, cur1, next1)) {
          esc1 = true;
          break;
        }
      }
      StoreStates(s0, cur0, next0);
      StoreStates(s1, cur1, next1);
    }
    // A stream that cannot take a vector group takes one value the scalar way (after an escape
    // its lanes stay out of step with the groups until sixteen more have gone by).
    if (s0.i < s0.n && (esc0 || !VectorReady(s0, C))) {
      ok[0] = ScalarValue(v, ch, s0);
      esc0 = false;
    }
    if (s1.i < s1.n && (esc1 || !VectorReady(s1, C))) {
      ok[1] = ScalarValue(v, ch, s1);
      esc1 = false;
    }
  }
  if (ok[0]) ok[0] = DecodeRest(v, ch, s0);
  if (ok[1]) ok[1] = DecodeRest(v, ch, s1);
}

// The code below that is not vector intrinsics is compiled without the AVX-512 target on
// purpose: that target enables FMA, and GCC 12's vectorizer then fuses a multiply with an
// alternating subtract/add into vfmaddsub despite -ffp-contract=off, one rounding instead of two
// (a different bit from tc_math.h). The same goes for intrinsics: Unfused() keeps a product a
// product.
KDN_TARGET_AVX512 inline __m512 Unfused(__m512 v) {
  asm("" : "+v"(v));
  return v;
}

// RoPE of one head in memory, as tc::ReconstructHead (rotary sizes the vectors do not cover).
__attribute__((noinline)) void RotateHeadInMemory(const tc::TcView& v, const float* cs, float* x) {
  const uint32_t pairs = v.rotary_dim / 2;
  for (uint32_t i = 0; i < pairs; ++i) {
    const uint32_t a = v.rope_style == 2 ? 2 * i : i;
    const uint32_t b = v.rope_style == 2 ? 2 * i + 1 : i + pairs;
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const float xa = x[a], xb = x[b];
    const float pa = xa * c, pb = xb * s;
    const float qa = xa * s, qb = xb * c;
    x[a] = pa - pb;
    x[b] = qa + qb;
  }
}

// One head by tc::ReconstructHead itself (head sizes the vectors do not cover).
__attribute__((noinline)) void ReconstructHeadReference(const tc::TcView& v, const int16_t* qrow,
                                                        uint32_t t, uint32_t h, float* x) {
  tc::ReconstructHead(v, qrow, t, h, x);
}

// 16 floats written as dtype at out (any alignment), rounded as tc::StoreFloats; only the lanes
// of `keep` (a tail).
KDN_TARGET_AVX512 inline void Store16(__m512 x, DType dtype, std::byte* out, __mmask16 keep) {
  if (dtype == DType::kF32) {
    _mm512_mask_storeu_ps(out, keep, x);
  } else if (dtype == DType::kF16) {
    const __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(out, keep, h);
  } else {
    const __m256i h = _mm512_cvtepi32_epi16(x86::Bf16Bits16(_mm512_castps_si512(x)));
    _mm256_mask_storeu_epi16(out, keep, h);
  }
}

// Butterflies of distance `len` (1, 2, 4 or 8) inside one vector: `sw` holds each lane's partner;
// the lower lane of a pair gets a + b, the upper (mask `upper`) a - b, a the lower lane's value.
KDN_TARGET_AVX512 inline __m512 Butterfly(__m512 v, __m512 sw, __mmask16 upper) {
  return _mm512_mask_sub_ps(_mm512_add_ps(v, sw), upper, sw, v);
}

// One head of R vectors (head_dim = 16 R) from its coefficients to the output, in registers.
// Rotation in registers needs whole vectors of pairs; other rotary sizes go through memory.
template <uint32_t R>
KDN_TARGET_AVX512 inline void HeadInRegisters(const tc::TcView& v, const int16_t* qh,
                                              const float* step, const float* mean, const float* cs,
                                              DType dtype, size_t esize, std::byte* out) {
  __m512 x[R];
#pragma GCC unroll 16
  for (uint32_t r = 0; r < R; ++r) {
    // (The maskz forms: GCC 12 reports its own undefined vectors in the plain ones as
    // uninitialized.)
    const __m512 qf = _mm512_maskz_cvtepi32_ps(
        0xFFFF, _mm512_maskz_cvtepi16_epi32(
                    0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 16 * r))));
    x[r] = Unfused(_mm512_mul_ps(qf, _mm512_loadu_ps(step + 16 * r)));
  }
  // (A Hadamard transform implies a power-of-two head: TcBlock::Parse checks it.)
  if constexpr ((R & (R - 1)) == 0) {
    if (v.transform == tc::kTransformHadamard) {
      // Stage after stage as tc::Hadamard: distances 1, 2, 4, 8 inside vectors, then between them.
#pragma GCC unroll 16
      for (uint32_t r = 0; r < R; ++r) {
        __m512 a = x[r];
        a = Butterfly(a, _mm512_permute_ps(a, 0xB1), 0xAAAA);
        a = Butterfly(a, _mm512_permute_ps(a, 0x4E), 0xCCCC);
        a = Butterfly(a, _mm512_shuffle_f32x4(a, a, 0xB1), 0xF0F0);
        x[r] = Butterfly(a, _mm512_shuffle_f32x4(a, a, 0x4E), 0xFF00);
      }
#pragma GCC unroll 16
      for (uint32_t len = 1; len < R; len <<= 1) {
#pragma GCC unroll 16
        for (uint32_t j = 0; j < R; ++j) {
          if ((j & len) != 0) continue;
          // j | len < R (R a power of two); the mask says so to the compiler.
          const uint32_t k = (j | len) & (R - 1);
          const __m512 a = x[j], b = x[k];
          x[j] = _mm512_add_ps(a, b);
          x[k] = _mm512_sub_ps(a, b);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (uint32_t r = 0; r < R; ++r) x[r] = _mm512_add_ps(x[r], _mm512_loadu_ps(mean + 16 * r));
  const uint32_t pairs = v.rotary_dim / 2;
  if (pairs != 0) {
    if (v.rope_style == 1 && pairs == 8 * R && R % 2 == 0) {
      // Pairs (i, i + pairs) of a fully rotated head: vector r with vector r + R / 2; cos and sin
      // taken apart from the table's (cos, sin) pairs.
      const __m512i even =
          _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      const __m512i odd =
          _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
#pragma GCC unroll 16
      for (uint32_t r = 0; r < R / 2; ++r) {
        const __m512 lo = _mm512_loadu_ps(cs + 32 * r), hi = _mm512_loadu_ps(cs + 32 * r + 16);
        const __m512 c = _mm512_permutex2var_ps(lo, even, hi);
        const __m512 s = _mm512_permutex2var_ps(lo, odd, hi);
        const __m512 xa = x[r], xb = x[r + R / 2];
        const __m512 pa = Unfused(_mm512_mul_ps(xa, c)), pb = Unfused(_mm512_mul_ps(xb, s));
        const __m512 qa = Unfused(_mm512_mul_ps(xa, s)), qb = Unfused(_mm512_mul_ps(xb, c));
        x[r] = _mm512_sub_ps(pa, pb);
        x[r + R / 2] = _mm512_add_ps(qa, qb);
      }
    } else if (v.rope_style == 2 && pairs % 8 == 0) {
      // Pairs (2i, 2i + 1): eight per vector, cos and sin duplicated over each pair; even lanes
      // pa - pb, odd lanes qa + qb, operands in the reference's order.
#pragma GCC unroll 16
      for (uint32_t r = 0; r < R; ++r) {
        if (8 * r >= pairs) break;
        const __m512 csv = _mm512_loadu_ps(cs + 16 * r);
        const __m512 cv = _mm512_moveldup_ps(csv), sv = _mm512_movehdup_ps(csv);
        const __m512 xc = Unfused(_mm512_mul_ps(x[r], cv));                           // xa c, xb c
        const __m512 ss = Unfused(_mm512_mul_ps(_mm512_permute_ps(x[r], 0xB1), sv));  // xb s, xa s
        x[r] = _mm512_mask_add_ps(_mm512_sub_ps(xc, ss), 0xAAAA, ss, xc);
      }
    } else {
      alignas(64) float buf[16 * R];
#pragma GCC unroll 16
      for (uint32_t r = 0; r < R; ++r) _mm512_store_ps(buf + 16 * r, x[r]);
      RotateHeadInMemory(v, cs, buf);
#pragma GCC unroll 16
      for (uint32_t r = 0; r < R; ++r) x[r] = _mm512_load_ps(buf + 16 * r);
    }
  }
#pragma GCC unroll 16
  for (uint32_t r = 0; r < R; ++r) Store16(x[r], dtype, out + 16 * r * esize, 0xFFFF);
}

template <uint32_t R>
KDN_TARGET_AVX512 void RowInRegisters(const tc::TcView& v, const int16_t* qrow, uint32_t t,
                                      DType dtype, std::byte* out) {
  constexpr uint32_t hd = 16 * R;
  const uint32_t heads = v.channels / hd;
  const uint32_t pairs = v.rotary_dim / 2;
  const float* cs = pairs != 0 ? v.rope_cs + uint64_t{t} * pairs * 2 : nullptr;
  const size_t esize = dtype == DType::kF32 ? 4 : 2;
  for (uint32_t h = 0; h < heads; ++h) {
    const uint64_t c0 = uint64_t{h} * hd;
    HeadInRegisters<R>(v, qrow + c0, v.step + c0, v.mean + c0, cs, dtype, esize, out + c0 * esize);
  }
}

// Other head sizes: each head rebuilt by tc::ReconstructHead, then narrowed sixteen at a time.
KDN_TARGET_AVX512 void RowByHead(const tc::TcView& v, const int16_t* qrow, uint32_t t, DType dtype,
                                 std::byte* out) {
  const uint32_t hd = v.head_dim;
  const uint32_t heads = v.channels / hd;
  const size_t esize = dtype == DType::kF32 ? 4 : 2;
  alignas(64) float x[tc::kMaxHeadDim];
  for (uint32_t h = 0; h < heads; ++h) {
    ReconstructHeadReference(v, qrow, t, h, x);
    std::byte* o = out + uint64_t{h} * hd * esize;
    for (uint32_t d = 0; d < hd; d += 16) {
      const uint32_t left = hd - d;
      const __mmask16 keep = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
      Store16(_mm512_maskz_loadu_ps(keep, x + d), dtype, o + d * esize, keep);
    }
  }
}

void ReconstructStoreAvx512(const tc::TcView& v, const int16_t* qrow, uint32_t t, DType dtype,
                            std::byte* out) {
  switch (v.head_dim) {
    case 16:
      return RowInRegisters<1>(v, qrow, t, dtype, out);
    case 32:
      return RowInRegisters<2>(v, qrow, t, dtype, out);
    case 64:
      return RowInRegisters<4>(v, qrow, t, dtype, out);
    case 96:
      return RowInRegisters<6>(v, qrow, t, dtype, out);
    case 128:
      return RowInRegisters<8>(v, qrow, t, dtype, out);
    case 256:
      return RowInRegisters<16>(v, qrow, t, dtype, out);
    default:
      return RowByHead(v, qrow, t, dtype, out);
  }
}

}  // namespace

void FillTcAvx512(Kernels* k) {
  FillTcAvx2(k);
  k->tc_decode_segment = DecodeSegmentAvx512;
  k->tc_decode_segment_pair = DecodeSegmentPairAvx512;
  k->tc_reconstruct_store = ReconstructStoreAvx512;
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillTcAvx512(Kernels*) {}
}  // namespace kdn::simd

#endif
