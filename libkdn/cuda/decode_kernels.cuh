// Decode kernels: thin loops over element_math.h. A thread block decodes one token tile of one
// (layer, K/V) block (blockIdx.y is K or V); each thread handles kVec consecutive channels of a
// token (kVec divides head_dim, so they sit in one head and are contiguous in the destination),
// with consecutive threads on consecutive channels: loads and stores are coalesced, and 16 bytes
// wide where the host found the destination aligned for it.
#ifndef KDN_LIBKDN_CUDA_DECODE_KERNELS_CUH_
#define KDN_LIBKDN_CUDA_DECODE_KERNELS_CUH_

#include <stdint.h>

#include "libkdn/cuda/decode_launch.h"
#include "libkdn/cuda/vector_io.cuh"
#include "libkdn/dest_addressing.h"
#include "libkdn/element_io.h"
#include "store/format/element_math.h"

namespace kdn::libkdn {

inline constexpr int kDecodeThreads = 256;

struct DecodeTile {
  DecodeArgs args;
  uint32_t tile_tokens;
};

// kVec values, already binary32, converted to the output dtype and stored (vector store).
template <uint32_t kVec>
__device__ __forceinline__ void StoreValues(void* base, int64_t index, uint32_t out_type,
                                            const float (&v)[kVec]) {
  if (out_type == kElemF32) {
    alignas(16) float tmp[kVec];
#pragma unroll
    for (uint32_t k = 0; k < kVec; ++k) tmp[k] = v[k];
    CopyAligned<kVec * 4>(static_cast<float*>(base) + index, tmp);
  } else {
    alignas(16) uint16_t tmp[kVec];
#pragma unroll
    for (uint32_t k = 0; k < kVec; ++k) {
      tmp[k] = out_type == kElemF16 ? elem::FloatToHalf(v[k]) : elem::FloatToBf16(v[k]);
    }
    CopyAligned<kVec * 2>(static_cast<uint16_t*>(base) + index, tmp);
  }
}

// Stored bits of model dtype `type` as binary32 (exact).
__device__ __forceinline__ float BitsToFloat(uint32_t bits, uint32_t type) {
  if (type == kElemF32) return elem::BitsFloat(bits);
  return type == kElemF16 ? elem::HalfToFloat(static_cast<uint16_t>(bits))
                          : elem::Bf16ToFloat(static_cast<uint16_t>(bits));
}

// Raw, same dtype in and out: the stored bits, copied.
template <uint32_t kVec, uint32_t kElemBytes>
__device__ __forceinline__ void CopyRaw(const DecodeArgs& a, const uint8_t* payload, uint32_t t,
                                        uint32_t c, void* out, int64_t index) {
  const uint8_t* src = payload + (static_cast<uint64_t>(t) * a.channels + c) * kElemBytes;
  CopyAligned<kVec * kElemBytes>(static_cast<uint8_t*>(out) + index * kElemBytes, src);
}

// Raw with a dtype conversion.
template <uint32_t kVec>
__device__ __forceinline__ void ConvertRaw(const DecodeArgs& a, const uint8_t* payload, uint32_t t,
                                           uint32_t c, float (&v)[kVec]) {
  const uint64_t e = static_cast<uint64_t>(t) * a.channels + c;
#pragma unroll
  for (uint32_t k = 0; k < kVec; ++k)
    v[k] = LoadElem(payload, static_cast<int64_t>(e + k), a.model_dtype);
}

// Lossless: plane p holds byte (S - 1 - p) of each value rotated left by one.
template <uint32_t kVec>
__device__ __forceinline__ void LosslessBits(const DecodeArgs& a, const uint8_t* payload,
                                             uint32_t t, uint32_t c, uint32_t (&bits)[kVec]) {
  const uint64_t n = static_cast<uint64_t>(a.tokens) * a.channels;
  const uint64_t e = static_cast<uint64_t>(t) * a.channels + c;
  const uint32_t planes = ElemSize(a.model_dtype);
#pragma unroll
  for (uint32_t k = 0; k < kVec; ++k) bits[k] = 0;
  for (uint32_t p = 0; p < planes; ++p) {
    alignas(8) uint8_t bytes[kVec];
    if constexpr (kVec >= 2) {
      CopyAligned<kVec>(bytes, payload + p * n + e);
    } else {
      bytes[0] = payload[p * n + e];
    }
#pragma unroll
    for (uint32_t k = 0; k < kVec; ++k) bits[k] = (bits[k] << 8) | bytes[k];
  }
#pragma unroll
  for (uint32_t k = 0; k < kVec; ++k) {
    bits[k] = planes == 4 ? elem::RotateRight1(bits[k])
                          : elem::RotateRight1(static_cast<uint16_t>(bits[k]));
  }
}

// Quant: (scale, zero) per group, codes packed LSB first per row (docs/kv-format.md).
template <uint32_t kVec>
__device__ __forceinline__ void Dequantize(const DecodeArgs& a, const uint8_t* payload,
                                           uint32_t codes_offset, uint32_t kind, uint32_t t,
                                           uint32_t c, float (&v)[kVec]) {
  const uint16_t* params = reinterpret_cast<const uint16_t*>(payload);
  const uint8_t* row =
      payload + codes_offset + static_cast<uint64_t>(t) * elem::PackedRowBytes(a.channels, a.bits);
  const uint32_t groups_per_row = (a.channels + a.group_size - 1) / a.group_size;
#pragma unroll
  for (uint32_t k = 0; k < kVec; ++k) {
    const uint32_t ch = c + k;
    const uint64_t rec = kind == 0 ? static_cast<uint64_t>(t / a.group_size) * a.channels + ch
                                   : static_cast<uint64_t>(t) * groups_per_row + ch / a.group_size;
    const uint32_t code = elem::UnpackCode(row, ch, a.bits);
    v[k] = elem::Dequant(params[2 * rec], params[2 * rec + 1], code);
  }
}

template <uint32_t kCodec, uint32_t kVec>
__global__ void __launch_bounds__(kDecodeThreads)
    DecodeKernel(const __grid_constant__ DecodeTile tile) {
  const DecodeArgs& a = tile.args;
  const uint32_t kind = blockIdx.y;
  const DecodeBlockArgs& b = a.block[kind];
  if (b.out == nullptr) return;
  const uint32_t t0 = blockIdx.x * tile.tile_tokens;
  const uint32_t t1 = min(a.tokens, t0 + tile.tile_tokens);
  const uint32_t vecs_per_row = a.channels / kVec;
  const uint32_t n = (t1 - t0) * vecs_per_row;
  const bool same_type = a.model_dtype == a.out_dtype;
  for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
    const uint32_t t = t0 + i / vecs_per_row;
    const uint32_t c = (i % vecs_per_row) * kVec;
    const int64_t row = DestRowOffset(a.addr, a.dest_token_offset + t);
    if (row < 0) continue;
    const int64_t index = row + DestChannelOffset(a.addr, c);
    if constexpr (kCodec == kDecodeRaw) {
      if (same_type) {
        if (a.out_dtype == kElemF32) {
          CopyRaw<kVec, 4>(a, b.payload, t, c, b.out, index);
        } else {
          CopyRaw<kVec, 2>(a, b.payload, t, c, b.out, index);
        }
        continue;
      }
      float v[kVec];
      ConvertRaw<kVec>(a, b.payload, t, c, v);
      StoreValues<kVec>(b.out, index, a.out_dtype, v);
    } else if constexpr (kCodec == kDecodeLossless) {
      uint32_t bits[kVec];
      LosslessBits<kVec>(a, b.payload, t, c, bits);
      if (same_type) {  // the stored bits, exactly (NaN payloads included)
        if (a.out_dtype == kElemF32) {
          alignas(16) uint32_t tmp[kVec];
#pragma unroll
          for (uint32_t k = 0; k < kVec; ++k) tmp[k] = bits[k];
          CopyAligned<kVec * 4>(static_cast<uint32_t*>(b.out) + index, tmp);
        } else {
          alignas(16) uint16_t tmp[kVec];
#pragma unroll
          for (uint32_t k = 0; k < kVec; ++k) tmp[k] = static_cast<uint16_t>(bits[k]);
          CopyAligned<kVec * 2>(static_cast<uint16_t*>(b.out) + index, tmp);
        }
        continue;
      }
      float v[kVec];
#pragma unroll
      for (uint32_t k = 0; k < kVec; ++k) v[k] = BitsToFloat(bits[k], a.model_dtype);
      StoreValues<kVec>(b.out, index, a.out_dtype, v);
    } else {
      float v[kVec];
      Dequantize<kVec>(a, b.payload, b.codes_offset, kind, t, c, v);
      StoreValues<kVec>(b.out, index, a.out_dtype, v);
    }
  }
}

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_DECODE_KERNELS_CUH_
