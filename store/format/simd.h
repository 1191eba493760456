// Runtime-dispatched kernels of the CPU codecs: dequantization of one row, dtype conversion and the
// lossless codec's byte planes. Each exists as a portable scalar reference (scalar_kernels.h, built
// on element_math.h) and as AVX2+F16C and AVX-512 versions that produce the same bits; the best one
// the CPU supports is chosen once, at first use.
#ifndef KDN_STORE_FORMAT_SIMD_H_
#define KDN_STORE_FORMAT_SIMD_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "kdn/format.h"

namespace kdn::simd {

enum class Isa : uint8_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
std::string_view IsaName(Isa isa);  // "scalar", "avx2", "avx512"
// Compiled in and supported by this CPU.
bool IsaSupported(Isa isa);
std::vector<Isa> SupportedIsas();
// The best supported ISA, or the one named by $KDN_ISA (scalar, avx2, avx512) when supported:
// benchmarks and tests compare paths that way.
Isa BestIsa();

// out[c] = out_dtype(scale[c] * code(c) + zero[c]) for c in [0, channels): one row of codes.
using DequantChannelsFn = void (*)(const uint8_t* codes, uint32_t channels, const float* scale,
                                   const float* zero, void* out);
// Same, with parameters that change every `group` channels: `params` holds {scale fp16, zero fp16}
// records (little-endian, any alignment), record g for channels [g * group, (g + 1) * group).
using DequantGroupsFn = void (*)(const uint8_t* codes, uint32_t channels, const uint8_t* params,
                                 uint32_t group, void* out);
// n elements from one dtype to another (round to nearest even when narrowing).
using ConvertFn = void (*)(const void* src, void* dst, size_t n);
// Lossless codec, n elements starting at element `first`: planes[p * plane_stride + e] is byte
// (S - 1 - p) of element e rotated left by one.
using UnplaneFn = void (*)(const uint8_t* planes, uint64_t plane_stride, uint64_t first, size_t n,
                           void* out);
using PlaneFn = void (*)(const void* src, size_t n, uint8_t* planes, uint64_t plane_stride,
                         uint64_t first);

struct Kernels {
  Isa isa = Isa::kScalar;
  // dequant_groups is used only when group % group_multiple == 0 (else the parameters are widened
  // per channel and dequant_channels is used).
  uint32_t group_multiple = 1;
  DequantChannelsFn dequant_channels[3][3] = {};  // [BitsIndex][DTypeIndex of the output]
  DequantGroupsFn dequant_groups[3][3] = {};
  ConvertFn convert[3][3] = {};  // [from][to]; the diagonal is unused
  UnplaneFn unplane[2] = {};     // [0]: 2-byte elements, [1]: 4-byte elements
  PlaneFn plane[2] = {};
};

inline int BitsIndex(uint32_t bits) {
  return bits == 8 ? 0 : (bits == 4 ? 1 : 2);
}
inline int DTypeIndex(DType t) {
  return static_cast<int>(t) - 1;
}
inline int PlaneIndex(size_t dtype_size) {
  return dtype_size == 2 ? 0 : 1;
}

// Kernels of one ISA (which must be supported), and the ones in use (BestIsa()).
const Kernels& KernelsFor(Isa isa);
const Kernels& ActiveKernels();

// Per-ISA table builders (scalar_kernels.cc, *_avx2.cc, *_avx512.cc).
void FillScalarKernels(Kernels* k);
void FillQuantAvx2(Kernels* k);
void FillQuantAvx512(Kernels* k);
void FillConvertAvx2(Kernels* k);
void FillConvertAvx512(Kernels* k);
void FillPlaneAvx2(Kernels* k);
void FillPlaneAvx512(Kernels* k);

}  // namespace kdn::simd

#endif  // KDN_STORE_FORMAT_SIMD_H_
