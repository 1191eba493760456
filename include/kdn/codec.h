// CPU codecs for one `.kv` block: one layer's K or V, [tokens][kv_heads][head_dim].
//
// raw       the model dtype's bytes as they are.
// lossless  bits regrouped into byte planes (the exponent plane apart, where values agree most),
//           then zstd. Bit-exact for fp16, bf16 and fp32.
// q8/q4/q2  KIVI-style asymmetric quantization with fp16 scale and zero per group: K per channel
//           over groups of `group_size` tokens (K outliers live in channels), V per token over
//           groups of `group_size` channels. Optionally zstd over the whole encoded block.
//
// The byte layout of each codec is specified in docs/kv-format.md. Decoders validate every size
// against the block's shape before touching memory: a forged block is an error, never a crash.
#ifndef KDN_CODEC_H_
#define KDN_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn {

// Shape of one block.
struct BlockShape {
  uint32_t tokens = 0;
  uint32_t channels = 0;  // kv_heads * head_dim
  DType dtype = DType::kF16;  // model dtype: what raw/lossless store and what the encoder reads
  uint64_t elements() const { return uint64_t{tokens} * channels; }
  uint64_t bytes() const { return elements() * DTypeSize(dtype); }
};

// Encodes `src` (shape.bytes() bytes of shape.dtype) and appends the encoded bytes to `out`.
Status EncodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> src, std::vector<std::byte>* out);

// Decodes `encoded` into `out`, written as `out_dtype` (shape.elements() * DTypeSize(out_dtype)
// bytes). Lossless codecs reproduce the source bits exactly when out_dtype == shape.dtype.
Status DecodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> encoded, DType out_dtype, std::span<std::byte> out);

// Converts n elements between dtypes (round to nearest even when narrowing).
void ConvertDType(DType from, const void* src, DType to, void* dst, size_t n);

}  // namespace kdn

#endif  // KDN_CODEC_H_
