// Rotary position embedding, re-applied by a position delta: the arithmetic of kdn_rope_shift and
// kdn_blend_load for the CPU backend and the CUDA kernels.
//
// RoPE rotates pair i of a head's first r = rotary_dim dims by the angle
//   position / rope_scale * theta^(-2i / r),
// pairs being (i, i + r/2) for NeoX and (2i, 2i + 1) for GPT-J. Rotations compose, so moving a key
// from position p to p + delta is one rotation by delta's angle, the same for every token of a
// shift. The host computes that angle's cosine and sine in double precision, once per pair
// (RopeShiftTable), and both backends apply them in binary32 with each multiply and add rounded
// on its own (no fused multiply-add), so CPU and GPU produce the same bits. Against RoPE computed
// from scratch at the new position, the error is that of binary32 arithmetic (a few ulp of
// binary32, relative to the pair's norm) plus the rounding of the stored dtype.
#ifndef KDN_LIBKDN_ROPE_MATH_H_
#define KDN_LIBKDN_ROPE_MATH_H_

#include <stdint.h>

#include "store/format/element_math.h"  // KDN_HD

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace kdn::libkdn {

// kdn_rope_style values.
enum RopeKind : uint32_t { kRopeNone = 0, kRopeNeox = 1, kRopeGptj = 2 };

inline constexpr uint32_t kMaxRopePairs = 512;  // head_dim <= 1024

// The dims (within a head) of rotated pair i.
KDN_HD void RopePairDims(uint32_t style, uint32_t rotary_dim, uint32_t i, uint32_t* a,
                         uint32_t* b) {
  if (style == kRopeGptj) {
    *a = 2 * i;
    *b = 2 * i + 1;
  } else {
    *a = i;
    *b = i + rotary_dim / 2;
  }
}

// (x, y) rotated by the angle whose cosine and sine are c and s.
KDN_HD void RotatePair(float x, float y, float c, float s, float* xo, float* yo) {
#if defined(__CUDA_ARCH__)
  *xo = __fsub_rn(__fmul_rn(x, c), __fmul_rn(y, s));
  *yo = __fadd_rn(__fmul_rn(x, s), __fmul_rn(y, c));
#else
  // Built with -ffp-contract=off: two products, each rounded, then the sum, as on the device.
  *xo = x * c - y * s;
  *yo = x * s + y * c;
#endif
}

#if !defined(__CUDA_ARCH__)
// Angle (radians) of pair i at `position`, in double precision.
inline double RopeAngle(double position, double theta, double scale, uint32_t rotary_dim,
                        uint32_t i) {
  const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / rotary_dim);
  return position / scale * inv_freq;
}

// Cosines and sines of pair i's rotation by `delta` positions, i < rotary_dim / 2.
inline void RopeShiftTable(int64_t delta, double theta, double scale, uint32_t rotary_dim,
                           float* cos_out, float* sin_out) {
  for (uint32_t i = 0; i < rotary_dim / 2; ++i) {
    const double angle = RopeAngle(static_cast<double>(delta), theta, scale, rotary_dim, i);
    cos_out[i] = static_cast<float>(std::cos(angle));
    sin_out[i] = static_cast<float>(std::sin(angle));
  }
}
#endif

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_ROPE_MATH_H_
