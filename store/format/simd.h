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

namespace kdn::tc {
struct TcView;
}  // namespace kdn::tc

namespace kdn::simd {

// kAvx512Bf16 is kAvx512 whose conversions to bfloat16 use AVX512-BF16 (with AVX512-DQ).
enum class Isa : uint8_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };
inline constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};
std::string_view IsaName(Isa isa);  // "scalar", "avx2", "avx512", "avx512bf16"
// Compiled in and supported by this CPU.
bool IsaSupported(Isa isa);
std::vector<Isa> SupportedIsas();
// The best supported ISA, or the one named by $KDN_ISA (a name above) when supported:
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
// n parameter records {scale fp16, zero fp16} widened to floats (as elem::HalfToFloat, except that
// signaling NaNs may come out quiet: the dequantized values are the same either way).
using WidenParamsFn = void (*)(const uint8_t* records, size_t n, float* scale, float* zero);

// Quant encoder steps (docs/kv-format.md, "quant"). All exact, so every ISA gives the same bytes.
// True when every x[i] is finite with |x[i]| <= 65504 (what fp16 parameters can describe).
using InRangeFn = bool (*)(const float* x, size_t n);
// lo[i] = min(lo[i], x[i]), hi[i] = max(hi[i], x[i]) (no NaN: InRangeFn came first).
using MinMaxFn = void (*)(const float* x, size_t n, float* lo, float* hi);
// lo[g], hi[g] of each run of `group` values (the last may be shorter).
using GroupRangeFn = void (*)(const float* x, size_t n, uint32_t group, float* lo, float* hi);
// Parameter records of n groups from their ranges: zero = fp16(lo), scale = fp16((hi - lo) / maxq),
// written as {scale, zero} fp16 pairs (little-endian, any alignment), and widened back to floats
// (the values the encoder quantizes with).
using MakeParamsFn = void (*)(const float* lo, const float* hi, size_t n, float maxq,
                              uint8_t* records, float* scale, float* zero);
// codes[i] = clamp(round_half_even((x[i] - zero[i]) / scale[i]), 0, maxq), 0 where scale[i] == 0.
using QuantizeFn = void (*)(const float* x, size_t n, const float* scale, const float* zero,
                            float maxq, uint8_t* codes);
// Same with one scale and zero per run of `group` values (V: groups of channels).
using QuantizeGroupsFn = void (*)(const float* x, size_t n, uint32_t group, const float* scale,
                                  const float* zero, float maxq, uint8_t* codes);
// n one-byte codes of `bits` bits packed LSB first into ceil(n * bits / 8) bytes.
using PackFn = void (*)(const uint8_t* codes, size_t n, uint32_t bits, uint8_t* out);

// The tc decoder (tc_math.h) on the CPU. TcChannels holds what a vector decoder looks up per
// channel instead of per table: [channels] offsets table_of[c] * kProbScale into the view's slots,
// and the escape symbol of the channel's table.
struct TcChannels {
  const uint32_t* slot_base = nullptr;
  const uint32_t* escape = nullptr;
};
// Segment `seg` of a checked block into q, as tc::DecodeSegment: the same coefficients and the
// same verdict (false: corrupt or truncated) for every input.
using TcDecodeSegmentFn = bool (*)(const tc::TcView& v, const TcChannels& ch, uint32_t seg,
                                   int16_t* q);
// Segments seg and seg + 1 into q0 and q1, each exactly as tc_decode_segment would (ok[0] and
// ok[1] its verdict), decoded together where that is faster. Null where an ISA has none.
using TcDecodeSegmentPairFn = void (*)(const tc::TcView& v, const TcChannels& ch, uint32_t seg,
                                       int16_t* q0, int16_t* q1, bool* ok);
// x[0, channels) = the binary32 values of token t from its coefficient row, every head as
// tc::ReconstructHead computes it (the same operations in the same order, so the same bits).
using TcReconstructRowFn = void (*)(const tc::TcView& v, const int16_t* qrow, uint32_t t,
                                    float* x);
// The same row written straight to `out` as out_dtype (the bytes tc::StoreFloats writes from x;
// `out` needs no alignment), without a binary32 row in memory between the steps. Null where an ISA
// has none: the caller then rebuilds into binary32 and converts.
using TcReconstructStoreFn = void (*)(const tc::TcView& v, const int16_t* qrow, uint32_t t,
                                      DType out_dtype, std::byte* out);

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
  WidenParamsFn widen_params = nullptr;
  InRangeFn in_range = nullptr;
  MinMaxFn min_max = nullptr;
  GroupRangeFn group_range = nullptr;
  MakeParamsFn make_params = nullptr;
  QuantizeFn quantize = nullptr;
  QuantizeGroupsFn quantize_groups = nullptr;
  PackFn pack = nullptr;
  TcDecodeSegmentFn tc_decode_segment = nullptr;
  TcDecodeSegmentPairFn tc_decode_segment_pair = nullptr;
  TcReconstructRowFn tc_reconstruct_row = nullptr;
  TcReconstructStoreFn tc_reconstruct_store = nullptr;
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
// Tests run the whole codec pipeline on each ISA this way (not thread-safe against running codecs).
void SetActiveIsaForTesting(Isa isa);

// Per-ISA table builders (scalar_kernels.cc, *_avx2.cc, *_avx512.cc).
void FillScalarKernels(Kernels* k);
void FillQuantAvx2(Kernels* k);
void FillQuantAvx512(Kernels* k);
void FillQuantAvx512Bf16(Kernels* k);
void FillConvertAvx2(Kernels* k);
void FillConvertAvx512(Kernels* k);
void FillConvertAvx512Bf16(Kernels* k);
void FillQuantEncodeAvx2(Kernels* k);
void FillQuantEncodeAvx512(Kernels* k);
void FillPlaneAvx2(Kernels* k);
void FillPlaneAvx512(Kernels* k);
void FillTcScalar(Kernels* k);
void FillTcAvx2(Kernels* k);
void FillTcAvx512(Kernels* k);

}  // namespace kdn::simd

#endif  // KDN_STORE_FORMAT_SIMD_H_
