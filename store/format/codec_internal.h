// Pieces of the CPU codecs shared by the dispatch (codec.cc), PreparedBlock, the header parser and
// the reader: shape checks, the quant block layout, and the per-codec encoders and row decoders.
#ifndef KDN_STORE_FORMAT_CODEC_INTERNAL_H_
#define KDN_STORE_FORMAT_CODEC_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn::codec_internal {

// Tokens 1..2^24, channels 1..2^20, a known dtype: every size below then fits in 64 bits.
Status ValidateShape(const BlockShape& shape);

// docs/kv-format.md, "quant": [params {scale fp16, zero fp16}][zero pad to 16][codes].
struct QuantLayout {
  uint64_t n_params = 0;        // parameter records
  uint64_t params_bytes = 0;    // 4 * n_params
  uint64_t codes_offset = 0;    // params_bytes rounded up to 16
  uint32_t row_bytes = 0;       // ceil(channels * bits / 8)
  uint64_t codes_bytes = 0;     // tokens * row_bytes
  uint64_t total = 0;           // codes_offset + codes_bytes
  uint32_t groups_per_row = 0;  // V: ceil(channels / group); K: 0
};
QuantLayout ComputeQuantLayout(KvKind kind, const BlockShape& shape, uint32_t bits, uint32_t group);

bool HasZstdStage(const CodecSpec& codec);
// Bytes of the block after its zstd stage is undone (what PreparedBlock::payload() holds).
uint64_t PayloadBytes(const CodecSpec& codec, KvKind kind, const BlockShape& shape);
// Whether `encoded_bytes` can be a block of this codec and shape (exact without a zstd stage,
// 1..ZSTD_compressBound(payload) with one). The message says what was expected.
Status CheckEncodedSize(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                        uint64_t encoded_bytes);
// The payload's size and, for quant, its zero padding.
Status CheckPayload(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                    std::span<const std::byte> payload);

// Encoders of the payload (before any zstd stage), into exactly PayloadBytes() bytes.
void EncodeLosslessPayload(const BlockShape& shape, std::span<const std::byte> src,
                           std::span<std::byte> dst);
Status EncodeQuantPayload(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                          std::span<const std::byte> src, std::span<std::byte> dst);

// Decode tokens [t_begin, t_end) of a checked payload (CheckPayload passed): row t goes to
// out + (t - t_begin) * row_stride_bytes as `out_dtype`.
void DecodeRawRows(const BlockShape& shape, std::span<const std::byte> payload, uint32_t t_begin,
                   uint32_t t_end, DType out_dtype, std::byte* out, size_t row_stride_bytes);
Status DecodeLosslessRows(const BlockShape& shape, std::span<const std::byte> payload,
                          uint32_t t_begin, uint32_t t_end, DType out_dtype, std::byte* out,
                          size_t row_stride_bytes);
Status DecodeQuantRows(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                       std::span<const std::byte> payload, uint32_t t_begin, uint32_t t_end,
                       DType out_dtype, std::byte* out, size_t row_stride_bytes);

// Any codec: dispatches to the three above.
Status DecodePayloadRows(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                         std::span<const std::byte> payload, uint32_t t_begin, uint32_t t_end,
                         DType out_dtype, std::byte* out, size_t row_stride_bytes);

}  // namespace kdn::codec_internal

#endif  // KDN_STORE_FORMAT_CODEC_INTERNAL_H_
