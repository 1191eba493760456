// CPU codecs for one `.kv` block: one layer's K or V, [tokens][kv_heads][head_dim].
//
// raw       the model dtype's bytes as they are.
// lossless  bits regrouped into byte planes (the exponent plane apart, where values agree most),
//           then zstd. Bit-exact for fp16, bf16 and fp32.
// q8/q4/q2  KIVI-style asymmetric quantization with fp16 scale and zero per group: K per channel
//           over groups of `group_size` tokens (K outliers live in channels), V per token over
//           groups of `group_size` channels. Optionally zstd over the whole encoded block.
// tc        transform coding: keys un-rotated (RoPE), channel means removed, a Hadamard transform
//           per head, one uniform step per block (quality q = 1..14, finer in shallow layers), the
//           integers coded with interleaved rANS in independent segments that GPU threads decode
//           in parallel. Lossy; ~2-3 bits/value where q4 needs 5 at the same quality.
//
// The byte layout of each codec is specified in docs/kv-format.md. Decoders validate every size
// against the block's shape before touching memory: a forged block is an error, never a crash.
#ifndef KDN_CODEC_H_
#define KDN_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn {

namespace codec_internal {
class TcBlock;
}

// Shape of one block.
struct BlockShape {
  uint32_t tokens = 0;
  uint32_t channels = 0;  // kv_heads * head_dim
  DType dtype = DType::kF16;  // model dtype: what raw/lossless store and what the encoder reads
  uint64_t elements() const { return uint64_t{tokens} * channels; }
  uint64_t bytes() const { return elements() * DTypeSize(dtype); }
};

// What an encoder may use beyond the block's shape: the model and the block's place in it. Only tc
// uses it (to un-rotate keys and to spend more bits on shallow layers); tc blocks record what they
// used, so decoders never need it.
struct BlockContext {
  uint32_t layer = 0;
  uint32_t n_layers = 1;
  uint32_t head_dim = 0;  // 0: unknown (no RoPE, heads guessed from the channel count)
  RopeStyle rope_style = RopeStyle::kNone;
  uint32_t rotary_dim = 0;  // 0 = head_dim
  float rope_theta = 10000.0f;
  float rope_scale = 1.0f;
  uint32_t position_offset = 0;
  static BlockContext For(const ModelIdentity& model, uint32_t position_offset, uint32_t layer);
};

// Encodes `src` (shape.bytes() bytes of shape.dtype) and appends the encoded bytes to `out`.
Status EncodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> src, std::vector<std::byte>* out);
Status EncodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> src, std::vector<std::byte>* out,
                   const BlockContext& context);

// Decodes `encoded` into `out`, written as `out_dtype` (shape.elements() * DTypeSize(out_dtype)
// bytes). Lossless codecs reproduce the source bits exactly when out_dtype == shape.dtype.
Status DecodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> encoded, DType out_dtype, std::span<std::byte> out);

// A block made ready for random-access decoding: the zstd stage undone (into memory it owns) and
// the layout checked against the shape. The engine library decodes token tiles from it on several
// threads (CPU backend) or uploads payload() and decodes on the device (CUDA backend).
class PreparedBlock {
 public:
  PreparedBlock() = default;  // empty: zero tokens, nothing to decode
  // Copies rebind payload() to the copy's own bytes when the original owned them.
  PreparedBlock(const PreparedBlock& other);
  PreparedBlock& operator=(const PreparedBlock& other);
  PreparedBlock(PreparedBlock&&) noexcept = default;
  PreparedBlock& operator=(PreparedBlock&&) noexcept = default;

  static Result<PreparedBlock> Prepare(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                                       std::span<const std::byte> encoded);

  // Decodes tokens [t_begin, t_end): token t's row of `channels` values of `out_dtype` is written
  // at out + (t - t_begin) * row_stride_bytes. Thread-safe (const).
  Status DecodeRows(uint32_t t_begin, uint32_t t_end, DType out_dtype, std::byte* out,
                    size_t row_stride_bytes) const;

  // Decodes channels [c_begin, c_end) of tokens [t_begin, t_end) (the KV heads of one
  // tensor-parallel rank: head h is channels [h * head_dim, (h + 1) * head_dim)): token t's slice
  // of c_end - c_begin values is written at out + (t - t_begin) * row_stride_bytes. What it costs
  // per codec: raw and lossless read only the slice's values (both lay out every element at a
  // fixed place, lossless after its zstd stage, which Prepare undid for the whole block); quant
  // reads only the slice's codes and parameters when its codes start on a byte (any head-aligned
  // slice: head_dim * bits is a multiple of 8 in every real model), else decodes whole rows; tc
  // decodes whole rows (its decoder works a segment of tokens at a time) and keeps the slice.
  // Thread-safe (const).
  Status DecodeRowChannels(uint32_t t_begin, uint32_t t_end, uint32_t c_begin, uint32_t c_end,
                           DType out_dtype, std::byte* out, size_t row_stride_bytes) const;

  // The bytes a device decoder reads, laid out as docs/kv-format.md says for this codec after its
  // zstd stage: raw values (raw), byte planes (lossless), params + pad + codes (quant).
  std::span<const std::byte> payload() const { return payload_; }
  const CodecSpec& codec() const { return codec_; }
  KvKind kind() const { return kind_; }
  const BlockShape& shape() const { return shape_; }
  // quant: byte offset of the codes within payload() (params start at 0).
  size_t codes_offset() const { return codes_offset_; }
  // tc: the parsed block (tables a device decoder uploads); null for other codecs.
  const codec_internal::TcBlock* tc() const { return tc_.get(); }
  // Tokens a decoder produces at once (tc decodes whole segments): tiles that are multiples of it
  // decode no token twice.
  uint32_t row_granularity() const;

 private:
  CodecSpec codec_;
  KvKind kind_ = KvKind::kKey;
  BlockShape shape_;
  std::vector<std::byte> owned_;        // decompressed bytes when there is a zstd stage
  std::span<const std::byte> payload_;  // owned_ or the caller's encoded bytes (must outlive this)
  size_t codes_offset_ = 0;
  std::shared_ptr<const codec_internal::TcBlock> tc_;
};

// Converts n elements between dtypes (round to nearest even when narrowing).
void ConvertDType(DType from, const void* src, DType to, void* dst, size_t n);

}  // namespace kdn

#endif  // KDN_CODEC_H_
