// quant codec (q8, q4, q2): KIVI-style asymmetric quantization with fp16 scale and zero. K is
// quantized per channel over groups of tokens (K's outliers live in channels), V per token over
// groups of channels. docs/kv-format.md, "quant", fixes the arithmetic and the bytes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "kdn/codec.h"
#include "store/format/codec_internal.h"
#include "store/format/element_math.h"
#include "store/format/kv_layout.h"
#include "store/format/le.h"
#include "store/format/limits.h"
#include "store/format/scalar_kernels.h"
#include "store/format/scratch.h"
#include "store/format/simd.h"

namespace kdn::codec_internal {

namespace {

// Row t of the source as floats, refusing what fp16 parameters cannot describe.
Status LoadRow(const simd::Kernels& k, const BlockShape& shape, std::span<const std::byte> src,
               uint32_t t, float* row) {
  const uint64_t row_bytes = uint64_t{shape.channels} * DTypeSize(shape.dtype);
  ConvertDType(shape.dtype, src.data() + row_bytes * t, DType::kF32, row, shape.channels);
  if (k.in_range(row, shape.channels)) return Status::OK();
  for (uint32_t c = 0; c < shape.channels; ++c) {
    if (!(std::fabs(row[c]) <= limits::kMaxQuantAbs)) {
      char value[32];
      std::snprintf(value, sizeof value, "%g", static_cast<double>(row[c]));
      return Status::InvalidArgument("quant encoder: value " + std::string(value) + " at token " +
                                     std::to_string(t) + ", channel " + std::to_string(c) +
                                     " is not a finite fp16-range value (|x| <= 65504)");
    }
  }
  return Status::Internal("quant encoder: range check disagrees with itself");
}

}  // namespace

QuantLayout ComputeQuantLayout(KvKind kind, const BlockShape& shape, uint32_t bits,
                               uint32_t group) {
  QuantLayout q;
  const uint64_t t = shape.tokens, c = shape.channels, g = group ? group : 1;
  if (kind == KvKind::kKey) {
    q.n_params = (t + g - 1) / g * c;
  } else {
    q.groups_per_row = static_cast<uint32_t>((c + g - 1) / g);
    q.n_params = t * q.groups_per_row;
  }
  q.params_bytes = 4 * q.n_params;
  q.codes_offset = layout::AlignUp(q.params_bytes, 16);
  q.row_bytes = static_cast<uint32_t>((c * bits + 7) / 8);
  q.codes_bytes = t * q.row_bytes;
  q.total = q.codes_offset + q.codes_bytes;
  return q;
}

Status EncodeQuantPayload(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                          std::span<const std::byte> src, std::span<std::byte> dst) {
  const simd::Kernels& k = simd::ActiveKernels();
  const QuantLayout q = ComputeQuantLayout(kind, shape, codec.bits, codec.group_size);
  const uint32_t bits = codec.bits, group = codec.group_size, channels = shape.channels;
  const float maxq = static_cast<float>((1u << bits) - 1);
  std::memset(dst.data() + q.params_bytes, 0, q.codes_offset - q.params_bytes);
  auto code_row = [&](uint32_t t) {
    return reinterpret_cast<uint8_t*>(dst.data() + q.codes_offset) + uint64_t{q.row_bytes} * t;
  };
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> tile,
                       scratch::Get(scratch::Slot::kTile, 4 * uint64_t{channels}));
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> codes_buf,
                       scratch::Get(scratch::Slot::kCodes, uint64_t{channels}));
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> pbuf,
                       scratch::Get(scratch::Slot::kParams, 16 * uint64_t{channels}));
  float* row = reinterpret_cast<float*>(tile.data());
  auto* codes = reinterpret_cast<uint8_t*>(codes_buf.data());
  float* lo = reinterpret_cast<float*>(pbuf.data());  // per channel (K) or per group (V)
  float* hi = lo + channels;
  float* scale = hi + channels;
  float* zero = scale + channels;

  if (kind == KvKind::kKey) {
    // Per channel over `group` tokens: a pass for the ranges, a pass for the codes.
    for (uint32_t t0 = 0, g = 0; t0 < shape.tokens; t0 += group, ++g) {
      const uint32_t t1 = shape.tokens - t0 < group ? shape.tokens : t0 + group;
      KDN_RETURN_IF_ERROR(LoadRow(k, shape, src, t0, row));
      std::memcpy(lo, row, 4 * size_t{channels});
      std::memcpy(hi, row, 4 * size_t{channels});
      for (uint32_t t = t0 + 1; t < t1; ++t) {
        KDN_RETURN_IF_ERROR(LoadRow(k, shape, src, t, row));
        k.min_max(row, channels, lo, hi);
      }
      k.make_params(lo, hi, channels, maxq,
                    reinterpret_cast<uint8_t*>(dst.data()) + 4 * uint64_t{g} * channels, scale,
                    zero);
      for (uint32_t t = t0; t < t1; ++t) {
        ConvertDType(shape.dtype, src.data() + uint64_t{channels} * DTypeSize(shape.dtype) * t,
                     DType::kF32, row, channels);  // range checked in the first pass
        k.quantize(row, channels, scale, zero, maxq, codes);
        k.pack(codes, channels, bits, code_row(t));
      }
    }
    return Status::OK();
  }

  // V: per token over `group` channels.
  for (uint32_t t = 0; t < shape.tokens; ++t) {
    KDN_RETURN_IF_ERROR(LoadRow(k, shape, src, t, row));
    k.group_range(row, channels, group, lo, hi);
    k.make_params(lo, hi, q.groups_per_row, maxq,
                  reinterpret_cast<uint8_t*>(dst.data()) + 4 * uint64_t{t} * q.groups_per_row,
                  scale, zero);
    k.quantize_groups(row, channels, group, scale, zero, maxq, codes);
    k.pack(codes, channels, bits, code_row(t));
  }
  return Status::OK();
}

Status DecodeQuantRows(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                       std::span<const std::byte> payload, uint32_t t_begin, uint32_t t_end,
                       DType out_dtype, std::byte* out, size_t row_stride_bytes) {
  const simd::Kernels& k = simd::ActiveKernels();
  const QuantLayout q = ComputeQuantLayout(kind, shape, codec.bits, codec.group_size);
  const uint32_t channels = shape.channels, group = codec.group_size;
  const auto* params = reinterpret_cast<const uint8_t*>(payload.data());
  const auto* codes = reinterpret_cast<const uint8_t*>(payload.data() + q.codes_offset);
  const int bi = simd::BitsIndex(codec.bits), oi = simd::DTypeIndex(out_dtype);
  const simd::DequantChannelsFn per_channel = k.dequant_channels[bi][oi];
  auto code_row = [&](uint32_t t) { return codes + uint64_t{q.row_bytes} * t; };
  auto out_row = [&](uint32_t t) { return out + row_stride_bytes * (t - t_begin); };

  if (kind == KvKind::kValue && group % k.group_multiple == 0) {
    const simd::DequantGroupsFn per_group = k.dequant_groups[bi][oi];
    for (uint32_t t = t_begin; t < t_end; ++t) {
      per_group(code_row(t), channels, params + 4 * uint64_t{t} * q.groups_per_row, group,
                out_row(t));
    }
    return Status::OK();
  }

  // Parameters widened to one float per channel: once per token group for K, per row for V.
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> pbuf,
                       scratch::Get(scratch::Slot::kParams, 8 * uint64_t{channels}));
  float* scale = reinterpret_cast<float*>(pbuf.data());
  float* zero = scale + channels;
  uint32_t widened = UINT32_MAX;
  for (uint32_t t = t_begin; t < t_end; ++t) {
    if (kind == KvKind::kKey) {
      const uint32_t g = t / group;
      if (g != widened) {
        k.widen_params(params + 4 * uint64_t{g} * channels, channels, scale, zero);
        widened = g;
      }
    } else {
      const uint8_t* rec = params + 4 * uint64_t{t} * q.groups_per_row;
      for (uint32_t c0 = 0, g = 0; c0 < channels; c0 += group, ++g) {
        const float s = elem::HalfToFloat(scalar::LoadU16(rec + 4 * g));
        const float z = elem::HalfToFloat(scalar::LoadU16(rec + 4 * g + 2));
        const uint32_t c1 = channels - c0 < group ? channels : c0 + group;
        for (uint32_t c = c0; c < c1; ++c) {
          scale[c] = s;
          zero[c] = z;
        }
      }
    }
    per_channel(code_row(t), channels, scale, zero, out_row(t));
  }
  return Status::OK();
}

bool DecodeQuantRowChannels(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                            std::span<const std::byte> payload, uint32_t t_begin, uint32_t t_end,
                            uint32_t c_begin, uint32_t c_end, DType out_dtype, std::byte* out,
                            size_t row_stride_bytes, Status* status) {
  if ((uint64_t{c_begin} * codec.bits) % 8 != 0) return false;
  const simd::Kernels& k = simd::ActiveKernels();
  const QuantLayout q = ComputeQuantLayout(kind, shape, codec.bits, codec.group_size);
  const uint32_t channels = shape.channels, group = codec.group_size, n = c_end - c_begin;
  const auto* params = reinterpret_cast<const uint8_t*>(payload.data());
  const auto* codes = reinterpret_cast<const uint8_t*>(payload.data() + q.codes_offset) +
                      uint64_t{c_begin} * codec.bits / 8;
  const int bi = simd::BitsIndex(codec.bits), oi = simd::DTypeIndex(out_dtype);
  const simd::DequantChannelsFn per_channel = k.dequant_channels[bi][oi];
  auto code_row = [&](uint32_t t) { return codes + uint64_t{q.row_bytes} * t; };
  auto out_row = [&](uint32_t t) { return out + row_stride_bytes * (t - t_begin); };

  // V whose slice is whole groups: the group kernel over the slice's own records.
  if (kind == KvKind::kValue && group % k.group_multiple == 0 && c_begin % group == 0 &&
      (n % group == 0 || c_end == channels)) {
    const simd::DequantGroupsFn per_group = k.dequant_groups[bi][oi];
    for (uint32_t t = t_begin; t < t_end; ++t) {
      per_group(code_row(t), n, params + 4 * (uint64_t{t} * q.groups_per_row + c_begin / group),
                group, out_row(t));
    }
    return true;
  }
  Result<std::span<std::byte>> pbuf = scratch::Get(scratch::Slot::kParams, 8 * uint64_t{n});
  if (!pbuf.ok()) {
    *status = pbuf.status();
    return true;
  }
  float* scale = reinterpret_cast<float*>(pbuf->data());
  float* zero = scale + n;
  uint32_t widened = UINT32_MAX;
  for (uint32_t t = t_begin; t < t_end; ++t) {
    if (kind == KvKind::kKey) {
      const uint32_t g = t / group;
      if (g != widened) {
        k.widen_params(params + 4 * (uint64_t{g} * channels + c_begin), n, scale, zero);
        widened = g;
      }
    } else {
      const uint8_t* rec = params + 4 * uint64_t{t} * q.groups_per_row;
      for (uint32_t c = c_begin; c < c_end; ++c) {
        const uint32_t g = c / group;
        scale[c - c_begin] = elem::HalfToFloat(scalar::LoadU16(rec + 4 * g));
        zero[c - c_begin] = elem::HalfToFloat(scalar::LoadU16(rec + 4 * g + 2));
      }
    }
    per_channel(code_row(t), n, scale, zero, out_row(t));
  }
  return true;
}

}  // namespace kdn::codec_internal
