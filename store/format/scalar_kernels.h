// The scalar reference of every kernel in simd.h, on element_math.h. The SIMD kernels call these
// for their tails, so a tail is the reference by construction.
#ifndef KDN_STORE_FORMAT_SCALAR_KERNELS_H_
#define KDN_STORE_FORMAT_SCALAR_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kdn/format.h"
#include "store/format/element_math.h"

namespace kdn::scalar {

// Loads and stores through memcpy: rows may sit at any alignment.
template <DType T>
inline float LoadElem(const void* src, size_t i) {
  if constexpr (T == DType::kF32) {
    float v;
    std::memcpy(&v, static_cast<const char*>(src) + 4 * i, 4);
    return v;
  } else {
    uint16_t h;
    std::memcpy(&h, static_cast<const char*>(src) + 2 * i, 2);
    if constexpr (T == DType::kF16) return elem::HalfToFloat(h);
    return elem::Bf16ToFloat(h);
  }
}

template <DType T>
inline void StoreElem(void* dst, size_t i, float v) {
  if constexpr (T == DType::kF32) {
    std::memcpy(static_cast<char*>(dst) + 4 * i, &v, 4);
  } else {
    const uint16_t h = T == DType::kF16 ? elem::FloatToHalf(v) : elem::FloatToBf16(v);
    std::memcpy(static_cast<char*>(dst) + 2 * i, &h, 2);
  }
}

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Channels [c0, c1) of a row with per-channel parameters.
template <uint32_t B, DType O>
inline void DequantChannelsRange(const uint8_t* codes, uint32_t c0, uint32_t c1, const float* scale,
                                 const float* zero, void* out) {
  for (uint32_t c = c0; c < c1; ++c) {
    StoreElem<O>(out, c, elem::DequantWide(scale[c], zero[c], elem::UnpackCode(codes, c, B)));
  }
}

// Channels [c0, c1) of a row with one scale and zero.
template <uint32_t B, DType O>
inline void DequantConstRange(const uint8_t* codes, uint32_t c0, uint32_t c1, float s, float z,
                              void* out) {
  for (uint32_t c = c0; c < c1; ++c) {
    StoreElem<O>(out, c, elem::DequantWide(s, z, elem::UnpackCode(codes, c, B)));
  }
}

template <uint32_t B, DType O>
void DequantChannels(const uint8_t* codes, uint32_t channels, const float* scale, const float* zero,
                     void* out) {
  DequantChannelsRange<B, O>(codes, 0, channels, scale, zero, out);
}

template <uint32_t B, DType O>
void DequantGroups(const uint8_t* codes, uint32_t channels, const uint8_t* params, uint32_t group,
                   void* out) {
  uint32_t g = 0;
  for (uint32_t c0 = 0; c0 < channels; c0 += group, ++g) {
    const float s = elem::HalfToFloat(LoadU16(params + 4 * size_t{g}));
    const float z = elem::HalfToFloat(LoadU16(params + 4 * size_t{g} + 2));
    const uint32_t c1 = channels - c0 < group ? channels : c0 + group;
    DequantConstRange<B, O>(codes, c0, c1, s, z, out);
  }
}

inline void WidenParams(const uint8_t* rec, size_t n, float* scale, float* zero) {
  for (size_t i = 0; i < n; ++i) {
    scale[i] = elem::HalfToFloat(LoadU16(rec + 4 * i));
    zero[i] = elem::HalfToFloat(LoadU16(rec + 4 * i + 2));
  }
}

// Quant encoder steps (simd.h).
inline bool InRange(const float* x, size_t n) {
  bool ok = true;
  for (size_t i = 0; i < n; ++i) ok &= x[i] <= 65504.0f && x[i] >= -65504.0f;  // false for NaN
  return ok;
}

inline void MinMaxRange(const float* x, size_t i0, size_t i1, float* lo, float* hi) {
  for (size_t i = i0; i < i1; ++i) {
    lo[i] = x[i] < lo[i] ? x[i] : lo[i];
    hi[i] = x[i] > hi[i] ? x[i] : hi[i];
  }
}
inline void MinMax(const float* x, size_t n, float* lo, float* hi) {
  MinMaxRange(x, 0, n, lo, hi);
}

inline void RangeOf(const float* x, size_t n, float* lo, float* hi) {
  float a = x[0], b = x[0];
  for (size_t i = 1; i < n; ++i) {
    a = x[i] < a ? x[i] : a;
    b = x[i] > b ? x[i] : b;
  }
  *lo = a;
  *hi = b;
}

inline void GroupRange(const float* x, size_t n, uint32_t group, float* lo, float* hi) {
  size_t g = 0;
  for (size_t i = 0; i < n; i += group, ++g)
    RangeOf(x + i, n - i < group ? n - i : group, &lo[g], &hi[g]);
}

inline void MakeParamsRange(const float* lo, const float* hi, size_t i0, size_t n, float maxq,
                            uint8_t* records, float* scale, float* zero) {
  for (size_t i = i0; i < n; ++i) {
    const uint16_t z = elem::FloatToHalf(lo[i]);
    const uint16_t s = elem::FloatToHalf((hi[i] - lo[i]) / maxq);
    std::memcpy(records + 4 * i, &s, 2);
    std::memcpy(records + 4 * i + 2, &z, 2);
    scale[i] = elem::HalfToFloat(s);
    zero[i] = elem::HalfToFloat(z);
  }
}
inline void MakeParams(const float* lo, const float* hi, size_t n, float maxq, uint8_t* records,
                       float* scale, float* zero) {
  MakeParamsRange(lo, hi, 0, n, maxq, records, scale, zero);
}

// Clamping before rounding gives the same code (the bounds are integers) and keeps the value in
// [0, 2^23), where adding and subtracting 2^23 rounds to nearest even (default rounding mode).
inline uint8_t QuantCode(float x, float s, float z, float maxq) {
  if (s == 0.0f) return 0;
  float v = (x - z) / s;
  v = v < 0.0f ? 0.0f : (v > maxq ? maxq : v);
  v = (v + 8388608.0f) - 8388608.0f;
  return static_cast<uint8_t>(v);
}

inline void QuantizeRange(const float* x, size_t i0, size_t i1, const float* s, const float* z,
                          float maxq, uint8_t* codes) {
  for (size_t i = i0; i < i1; ++i) codes[i] = QuantCode(x[i], s[i], z[i], maxq);
}
inline void Quantize(const float* x, size_t n, const float* s, const float* z, float maxq,
                     uint8_t* codes) {
  QuantizeRange(x, 0, n, s, z, maxq, codes);
}

inline void QuantizeGroups(const float* x, size_t n, uint32_t group, const float* s, const float* z,
                           float maxq, uint8_t* codes) {
  size_t g = 0;
  for (size_t i0 = 0; i0 < n; i0 += group, ++g) {
    const size_t i1 = n - i0 < group ? n : i0 + group;
    for (size_t i = i0; i < i1; ++i) codes[i] = QuantCode(x[i], s[g], z[g], maxq);
  }
}

// Codes [i0, n) into out, i0 a multiple of 8 / bits (a byte boundary).
inline void PackRange(const uint8_t* codes, size_t i0, size_t n, uint32_t bits, uint8_t* out) {
  if (bits == 8) {
    std::memcpy(out + i0, codes + i0, n - i0);
    return;
  }
  const size_t per_byte = 8 / bits;
  for (size_t i = i0; i < n; i += per_byte) {
    uint32_t b = 0;
    for (size_t k = 0; k < per_byte && i + k < n; ++k) b |= uint32_t{codes[i + k]} << (k * bits);
    out[i * bits / 8] = static_cast<uint8_t>(b);
  }
}
inline void Pack(const uint8_t* codes, size_t n, uint32_t bits, uint8_t* out) {
  PackRange(codes, 0, n, bits, out);
}

template <DType I, DType O>
inline void ConvertRange(const void* src, void* dst, size_t i0, size_t i1) {
  for (size_t i = i0; i < i1; ++i) StoreElem<O>(dst, i, LoadElem<I>(src, i));
}

template <DType I, DType O>
void Convert(const void* src, void* dst, size_t n) {
  ConvertRange<I, O>(src, dst, 0, n);
}

// Lossless planes for S-byte elements, elements [i0, i1) of a run starting at element `first`.
template <size_t S>
inline void UnplaneRange(const uint8_t* planes, uint64_t stride, uint64_t first, size_t i0,
                         size_t i1, void* out) {
  using U = std::conditional_t<S == 2, uint16_t, uint32_t>;
  for (size_t i = i0; i < i1; ++i) {
    U v = 0;
    for (size_t p = 0; p < S; ++p) {
      v = static_cast<U>(v | (U{planes[p * stride + first + i]} << (8 * (S - 1 - p))));
    }
    v = elem::RotateRight1(v);
    std::memcpy(static_cast<char*>(out) + S * i, &v, S);
  }
}

template <size_t S>
inline void PlaneRange(const void* src, size_t i0, size_t i1, uint8_t* planes, uint64_t stride,
                       uint64_t first) {
  using U = std::conditional_t<S == 2, uint16_t, uint32_t>;
  for (size_t i = i0; i < i1; ++i) {
    U v;
    std::memcpy(&v, static_cast<const char*>(src) + S * i, S);
    v = elem::RotateLeft1(v);
    for (size_t p = 0; p < S; ++p) {
      planes[p * stride + first + i] = static_cast<uint8_t>(v >> (8 * (S - 1 - p)));
    }
  }
}

template <size_t S>
void Unplane(const uint8_t* planes, uint64_t stride, uint64_t first, size_t n, void* out) {
  UnplaneRange<S>(planes, stride, first, 0, n, out);
}

template <size_t S>
void Plane(const void* src, size_t n, uint8_t* planes, uint64_t stride, uint64_t first) {
  PlaneRange<S>(src, 0, n, planes, stride, first);
}

}  // namespace kdn::scalar

#endif  // KDN_STORE_FORMAT_SCALAR_KERNELS_H_
