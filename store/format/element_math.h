// Per-element arithmetic of the `.kv` codecs, written once for the CPU and the GPU.
//
// Every function here is `KDN_HD` (__host__ __device__ under nvcc, plain inline otherwise), so the
// CPU codecs and the CUDA kernels run the same operations in the same order, and CPU tests check the
// GPU's arithmetic bit for bit. Conversions are done in integer arithmetic with round-to-nearest-even
// (the same result as the hardware conversions, F16C's vcvtps2ph and CUDA's __float2half_rn, for
// every input), and dequantization is a multiply then an add, each rounded on its own (never
// fused): see docs/kv-format.md, "quant".
//
// C++17 on purpose: nvcc compiles this header too.
#ifndef KDN_STORE_FORMAT_ELEMENT_MATH_H_
#define KDN_STORE_FORMAT_ELEMENT_MATH_H_

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define KDN_HD __host__ __device__ __forceinline__
#else
#define KDN_HD inline
#endif

namespace kdn::elem {

KDN_HD uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
#endif
}

KDN_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// IEEE binary16 -> binary32, exact (subnormals, infinities and NaN payloads preserved).
KDN_HD float HalfToFloat(uint16_t h) {
  const uint32_t sign = (uint32_t{h} & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return BitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsFloat(sign);  // +-0
  // Subnormal: normalize. value = mant * 2^-24.
  uint32_t e = 113;  // exponent (biased, binary32) of 2^-14
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return BitsFloat(sign | (e << 23) | ((mant & 0x3ffu) << 13));
}

// binary32 -> binary16, round to nearest even; overflow to infinity; NaN stays NaN (quiet).
KDN_HD uint16_t FloatToHalf(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? (0x200u | ((abs >> 13) & 0x3ffu)) : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs >= 0x38800000u) {  // normal half (>= 2^-14)
    const uint32_t mant_round = abs + 0xfffu + ((abs >> 13) & 1u);  // RNE on the 13 dropped bits
    return static_cast<uint16_t>(sign | ((mant_round - 0x38000000u) >> 13));
  }
  if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0 (2^-25 ties to even 0)
  // Subnormal half: value = m * 2^-24 with m in [0, 1024].
  const uint32_t exp = abs >> 23;                 // 102..112
  const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exp;              // 14..24
  uint32_t m = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (m & 1u))) ++m;
  return static_cast<uint16_t>(sign | m);
}

KDN_HD float Bf16ToFloat(uint16_t b) { return BitsFloat(uint32_t{b} << 16); }

// binary32 -> bfloat16, round to nearest even; NaN stays NaN (quiet).
KDN_HD uint16_t FloatToBf16(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Quantized value back to binary32 from parameters already widened to binary32 (HalfToFloat):
// scale * code, then + zero, each rounded on its own. Decoders widen a group's parameters once.
KDN_HD float DequantWide(float s, float z, uint32_t code) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(s, static_cast<float>(code)), z);
#else
  // Libraries that include this header build with -ffp-contract=off: no fma contraction here.
  return s * static_cast<float>(code) + z;
#endif
}

// Quantized value back to binary32: scale * code, then + zero, each rounded on its own.
KDN_HD float Dequant(uint16_t scale_h, uint16_t zero_h, uint32_t code) {
  return DequantWide(HalfToFloat(scale_h), HalfToFloat(zero_h), code);
}

// Code of channel c in a packed row (b bits per code, LSB first, b in {2, 4, 8}).
KDN_HD uint32_t UnpackCode(const uint8_t* row, uint32_t c, uint32_t bits) {
  const uint32_t bit = c * bits;
  return (row[bit >> 3] >> (bit & 7u)) & ((1u << bits) - 1u);
}

KDN_HD uint32_t PackedRowBytes(uint32_t channels, uint32_t bits) { return (channels * bits + 7u) / 8u; }

// Lossless codec's bit rotation: sign to bit 0, so the top byte of bf16/fp32 is the exponent.
KDN_HD uint16_t RotateLeft1(uint16_t v) { return static_cast<uint16_t>((v << 1) | (v >> 15)); }
KDN_HD uint16_t RotateRight1(uint16_t v) { return static_cast<uint16_t>((v >> 1) | (v << 15)); }
KDN_HD uint32_t RotateLeft1(uint32_t v) { return (v << 1) | (v >> 31); }
KDN_HD uint32_t RotateRight1(uint32_t v) { return (v >> 1) | (v << 31); }

}  // namespace kdn::elem

#endif  // KDN_STORE_FORMAT_ELEMENT_MATH_H_
