// The tc codec's decoder, written once for the CPU and the GPU (KDN_HD): rANS decode of one
// segment into quantized coefficients, then per (token, head) dequantization, the inverse
// transform, the mean, and RoPE re-applied to keys. docs/kv-format.md, "tc", fixes the bytes and
// the arithmetic: every float operation is a binary32 multiply or add rounded on its own (the
// CPU build has -ffp-contract=off, the CUDA build -fmad=false), in the order written here, so the
// two devices produce the same bits.
//
// TcView holds what the host derived from a checked block (codec_tc.cc, TcPrepared): tables as
// arrays a decoder indexes directly. Everything it points to was bounds-checked before a decoder
// runs; the decoder still bounds every read of the entropy-coded stream (rans.h).
//
// C++17 on purpose: nvcc compiles this header too.
#ifndef KDN_STORE_FORMAT_TC_MATH_H_
#define KDN_STORE_FORMAT_TC_MATH_H_

#include <stdint.h>

#include "store/format/element_math.h"
#include "store/format/rans.h"

namespace kdn::tc {

inline constexpr uint32_t kTransformIdentity = 0;
inline constexpr uint32_t kTransformHadamard = 1;
inline constexpr uint32_t kMaxHeadDim = 1024;
inline constexpr uint32_t kMaxTables = 16;

struct TcView {
  uint32_t tokens = 0;
  uint32_t channels = 0;
  uint32_t head_dim = 0;
  uint32_t rotary_dim = 0;     // pairs rotated at decode: rotary_dim / 2 (0: keys not rotated)
  uint32_t rope_style = 0;     // 1 neox (i, i + r/2), 2 gptj (2i, 2i + 1)
  uint32_t transform = 0;      // kTransformIdentity or kTransformHadamard
  uint32_t seg_tokens = 0;
  uint32_t n_segments = 0;
  const float* mean = nullptr;          // [channels]
  const float* step = nullptr;          // [channels]
  const uint8_t* table_of = nullptr;    // [channels]: which table codes the channel
  const uint32_t* slots = nullptr;      // [n_tables][rans::kProbScale]
  const uint32_t* escape = nullptr;     // [n_tables]: the escape symbol (nsym - 1)
  const uint8_t* segments = nullptr;    // the segment area
  const uint64_t* seg_begin = nullptr;  // [n_segments + 1], byte offsets into `segments`
  const float* rope_cs = nullptr;       // [tokens][rotary_dim / 2][cos, sin] when rotary_dim > 0
};

KDN_HD int32_t UnZigzag(uint32_t z) {
  return static_cast<int32_t>(z >> 1) ^ -static_cast<int32_t>(z & 1u);
}

// Tokens of segment `seg`: [seg * seg_tokens, min(+seg_tokens, tokens)).
KDN_HD uint32_t SegmentTokens(const TcView& v, uint32_t seg) {
  const uint32_t t0 = seg * v.seg_tokens;
  const uint32_t left = v.tokens - t0;
  return left < v.seg_tokens ? left : v.seg_tokens;
}

// Decodes segment `seg` into q ([SegmentTokens][channels] coefficients, row-major). False when the
// segment is corrupt or truncated (q then holds unspecified values, every write in bounds).
KDN_HD bool DecodeSegment(const TcView& v, uint32_t seg, int16_t* q) {
  const uint8_t* base = v.segments;
  rans::RansDecoder d(base + v.seg_begin[seg], base + v.seg_begin[seg + 1]);
  if (!d.ok()) return false;
  const uint32_t rows = SegmentTokens(v, seg);
  for (uint32_t r = 0; r < rows; ++r) {
    int16_t* out = q + static_cast<uint64_t>(r) * v.channels;
    for (uint32_t c = 0; c < v.channels; ++c) {
      const uint32_t tab = v.table_of[c];
      uint32_t z = d.Decode(v.slots + tab * rans::kProbScale);
      if (z == v.escape[tab]) {
        const uint32_t lo = d.DecodeByte();
        z = lo | (d.DecodeByte() << 8);
      }
      out[c] = static_cast<int16_t>(UnZigzag(z));
    }
  }
  return d.Finish();
}

// In-place unnormalized fast Walsh-Hadamard transform of n (a power of two) values: its own
// inverse up to a factor n, which the encoder folds into its coefficients.
KDN_HD void Hadamard(float* x, uint32_t n) {
  for (uint32_t len = 1; len < n; len <<= 1) {
    for (uint32_t i = 0; i < n; i += len << 1) {
      for (uint32_t j = i; j < i + len; ++j) {
        const float a = x[j];
        const float b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
    }
  }
}

// The decoded values of token t (within the block), head h, from that token's coefficient row:
// x = inverse transform(q * step) + mean, then RoPE at the token's position for keys.
KDN_HD void ReconstructHead(const TcView& v, const int16_t* qrow, uint32_t t, uint32_t h,
                            float* x) {
  const uint32_t c0 = h * v.head_dim;
  for (uint32_t d = 0; d < v.head_dim; ++d) {
    x[d] = static_cast<float>(qrow[c0 + d]) * v.step[c0 + d];
  }
  if (v.transform == kTransformHadamard) Hadamard(x, v.head_dim);
  for (uint32_t d = 0; d < v.head_dim; ++d) x[d] = x[d] + v.mean[c0 + d];
  const uint32_t pairs = v.rotary_dim / 2;
  if (pairs == 0) return;
  const float* cs = v.rope_cs + static_cast<uint64_t>(t) * pairs * 2;
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

// n floats stored as dtype (1 fp16, 2 bf16, 3 fp32; the DType values), round to nearest even.
KDN_HD void StoreFloats(const float* x, uint32_t n, uint32_t dtype, uint8_t* out) {
  if (dtype == 3) {
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t u = elem::FloatBits(x[i]);
      out[4 * i] = static_cast<uint8_t>(u);
      out[4 * i + 1] = static_cast<uint8_t>(u >> 8);
      out[4 * i + 2] = static_cast<uint8_t>(u >> 16);
      out[4 * i + 3] = static_cast<uint8_t>(u >> 24);
    }
    return;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const uint16_t u = dtype == 1 ? elem::FloatToHalf(x[i]) : elem::FloatToBf16(x[i]);
    out[2 * i] = static_cast<uint8_t>(u);
    out[2 * i + 1] = static_cast<uint8_t>(u >> 8);
  }
}

}  // namespace kdn::tc

#endif  // KDN_STORE_FORMAT_TC_MATH_H_
