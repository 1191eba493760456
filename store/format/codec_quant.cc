// quant codec (q8, q4, q2): KIVI-style asymmetric quantization with fp16 scale and zero. K is
// quantized per channel over groups of tokens (K's outliers live in channels), V per token over
// groups of channels. docs/kv-format.md, "quant", fixes the arithmetic and the bytes.
#include <cmath>
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

// code = clamp(round_half_even((x - zero) / scale), 0, maxq); 0 when scale is 0. Clamping before
// rounding gives the same code (the bounds are integers) and keeps the value in [0, 2^23), where
// adding and subtracting 2^23 rounds to nearest even in the default rounding mode.
inline uint32_t QuantCode(float x, float s, float z, float maxq) {
  if (s == 0.0f) return 0;
  float v = (x - z) / s;
  v = v < 0.0f ? 0.0f : (v > maxq ? maxq : v);
  v = (v + 8388608.0f) - 8388608.0f;
  return static_cast<uint32_t>(v);
}

inline void PutCode(uint8_t* row, uint32_t c, uint32_t bits, uint32_t code) {
  const uint32_t bit = c * bits;
  row[bit >> 3] = static_cast<uint8_t>(row[bit >> 3] | (code << (bit & 7u)));
}

// Parameters of one group from its range, as the format defines them; the encoder quantizes with
// the rounded values.
struct GroupParams {
  uint16_t scale_h, zero_h;
  float scale, zero;
};
inline GroupParams MakeParams(float lo, float hi, float maxq) {
  GroupParams p;
  p.zero_h = elem::FloatToHalf(lo);
  p.scale_h = elem::FloatToHalf((hi - lo) / maxq);
  p.zero = elem::HalfToFloat(p.zero_h);
  p.scale = elem::HalfToFloat(p.scale_h);
  return p;
}

inline void StoreParams(std::byte* at, const GroupParams& p) {
  le::Store<uint16_t>(at, p.scale_h);
  le::Store<uint16_t>(at + 2, p.zero_h);
}

// The row's values as floats, refusing what fp16 parameters cannot represent.
Status LoadRow(const BlockShape& shape, std::span<const std::byte> src, uint32_t t, float* row) {
  const uint64_t row_bytes = uint64_t{shape.channels} * DTypeSize(shape.dtype);
  ConvertDType(shape.dtype, src.data() + row_bytes * t, DType::kF32, row, shape.channels);
  for (uint32_t c = 0; c < shape.channels; ++c) {
    if (!(std::fabs(row[c]) <= limits::kMaxQuantAbs)) {
      char value[32];
      std::snprintf(value, sizeof value, "%g", static_cast<double>(row[c]));
      return Status::InvalidArgument("quant encoder: value " + std::string(value) + " at token " +
                                     std::to_string(t) + ", channel " + std::to_string(c) +
                                     " is not a finite fp16-range value (|x| <= 65504)");
    }
  }
  return Status::OK();
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
  const QuantLayout q = ComputeQuantLayout(kind, shape, codec.bits, codec.group_size);
  const uint32_t bits = codec.bits, group = codec.group_size, channels = shape.channels;
  const float maxq = static_cast<float>((1u << bits) - 1);
  std::memset(dst.data() + q.params_bytes, 0, q.codes_offset - q.params_bytes);
  auto code_row = [&](uint32_t t) {
    return reinterpret_cast<uint8_t*>(dst.data() + q.codes_offset) + uint64_t{q.row_bytes} * t;
  };

  KDN_ASSIGN_OR_RETURN(std::span<std::byte> tile,
                       scratch::Get(scratch::Slot::kTile, 4 * uint64_t{channels}));
  float* row = reinterpret_cast<float*>(tile.data());

  if (kind == KvKind::kKey) {
    // Per channel over `group` tokens: a pass for the ranges, a pass for the codes.
    KDN_ASSIGN_OR_RETURN(std::span<std::byte> pbuf,
                         scratch::Get(scratch::Slot::kParams, 16 * uint64_t{channels}));
    float* lo = reinterpret_cast<float*>(pbuf.data());
    float* hi = lo + channels;
    float* scale = hi + channels;
    float* zero = scale + channels;
    for (uint32_t t0 = 0, g = 0; t0 < shape.tokens; t0 += group, ++g) {
      const uint32_t t1 = shape.tokens - t0 < group ? shape.tokens : t0 + group;
      for (uint32_t t = t0; t < t1; ++t) {
        KDN_RETURN_IF_ERROR(LoadRow(shape, src, t, row));
        if (t == t0) {
          std::memcpy(lo, row, 4 * size_t{channels});
          std::memcpy(hi, row, 4 * size_t{channels});
          continue;
        }
        for (uint32_t c = 0; c < channels; ++c) {
          lo[c] = row[c] < lo[c] ? row[c] : lo[c];
          hi[c] = row[c] > hi[c] ? row[c] : hi[c];
        }
      }
      for (uint32_t c = 0; c < channels; ++c) {
        const GroupParams p = MakeParams(lo[c], hi[c], maxq);
        StoreParams(dst.data() + 4 * (uint64_t{g} * channels + c), p);
        scale[c] = p.scale;
        zero[c] = p.zero;
      }
      for (uint32_t t = t0; t < t1; ++t) {
        KDN_RETURN_IF_ERROR(LoadRow(shape, src, t, row));
        uint8_t* out = code_row(t);
        std::memset(out, 0, q.row_bytes);
        for (uint32_t c = 0; c < channels; ++c)
          PutCode(out, c, bits, QuantCode(row[c], scale[c], zero[c], maxq));
      }
    }
    return Status::OK();
  }

  // V: per token over `group` channels.
  for (uint32_t t = 0; t < shape.tokens; ++t) {
    KDN_RETURN_IF_ERROR(LoadRow(shape, src, t, row));
    uint8_t* out = code_row(t);
    std::memset(out, 0, q.row_bytes);
    for (uint32_t c0 = 0, g = 0; c0 < channels; c0 += group, ++g) {
      const uint32_t c1 = channels - c0 < group ? channels : c0 + group;
      float lo = row[c0], hi = row[c0];
      for (uint32_t c = c0 + 1; c < c1; ++c) {
        lo = row[c] < lo ? row[c] : lo;
        hi = row[c] > hi ? row[c] : hi;
      }
      const GroupParams p = MakeParams(lo, hi, maxq);
      StoreParams(dst.data() + 4 * (uint64_t{t} * q.groups_per_row + g), p);
      for (uint32_t c = c0; c < c1; ++c)
        PutCode(out, c, bits, QuantCode(row[c], p.scale, p.zero, maxq));
    }
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
        const uint8_t* rec = params + 4 * uint64_t{g} * channels;
        for (uint32_t c = 0; c < channels; ++c) {
          scale[c] = elem::HalfToFloat(scalar::LoadU16(rec + 4 * c));
          zero[c] = elem::HalfToFloat(scalar::LoadU16(rec + 4 * c + 2));
        }
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

}  // namespace kdn::codec_internal
