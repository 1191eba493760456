// Pieces of the CPU codecs shared by the dispatch (codec.cc), PreparedBlock, the header parser and
// the reader: shape checks, the quant block layout, and the per-codec encoders and row decoders.
#ifndef KDN_STORE_FORMAT_CODEC_INTERNAL_H_
#define KDN_STORE_FORMAT_CODEC_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "kdn/status.h"
#include "store/format/lossless_rans.h"
#include "store/format/tc_math.h"

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
// Channels [c_begin, c_end) of those rows (checked by the caller), when the slice's codes start on
// a byte (c_begin * bits a multiple of 8): only the slice's codes and parameters are read. False
// (nothing written) when they do not.
bool DecodeQuantRowChannels(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                            std::span<const std::byte> payload, uint32_t t_begin, uint32_t t_end,
                            uint32_t c_begin, uint32_t c_end, DType out_dtype, std::byte* out,
                            size_t row_stride_bytes, Status* status);

// The checks of a block's content beyond its checksum and streamed layout checks that need the
// whole encoded block: tc's (and lossless rANS') tables and every rANS segment decoded to its
// exact end. OK for codecs
// that have none. What a verifier calls once it holds a block whose checksum matched.
bool NeedsWholeBlockCheck(const CodecSpec& codec);
Status CheckWholeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                       std::span<const std::byte> encoded);
// lossless:entropy=rans: the encoded block parsed and every segment decoded into `planes`
// (shape.bytes()), as the zstd stage is undone for plain lossless.
Status UndoRansStage(const BlockShape& shape, std::span<const std::byte> encoded,
                     std::span<std::byte> planes);

// Any codec: dispatches to the three above.
Status DecodePayloadRows(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                         std::span<const std::byte> payload, uint32_t t_begin, uint32_t t_end,
                         DType out_dtype, std::byte* out, size_t row_stride_bytes);

// tc (docs/kv-format.md, "tc"): a block parsed and checked, with the tables a decoder indexes.
// Points into the payload it was parsed from, which must outlive it.
class TcBlock {
 public:
  static constexpr uint64_t kFixedBytes = 40;
  // Every size, offset and table of the block checked against the shape; Corruption otherwise.
  static Result<std::shared_ptr<const TcBlock>> Parse(const BlockShape& shape,
                                                      std::span<const std::byte> payload);
  // Tokens [t_begin, t_end) as out_dtype rows at out + (t - t_begin) * row_stride_bytes.
  // Corruption naming the segment when its stream is corrupt or truncated.
  Status DecodeRows(uint32_t t_begin, uint32_t t_end, DType out_dtype, std::byte* out,
                    size_t row_stride_bytes) const;
  // Decodes every segment's stream (what a verifier runs): OK when all end exactly.
  Status CheckStreams() const;

  const tc::TcView& view() const { return view_; }
  uint32_t n_tables() const { return n_tables_; }
  // The host arrays the view points to, for a device decoder to upload.
  std::span<const float> mean() const { return mean_; }
  std::span<const float> step() const { return step_; }
  std::span<const uint8_t> table_of() const { return table_of_; }
  std::span<const uint32_t> slots() const { return slots_; }
  std::span<const uint32_t> escape() const { return escape_; }
  std::span<const uint64_t> seg_begin() const { return seg_begin_; }
  std::span<const float> rope_cs() const;
  // Byte offset of the segment area within the payload.
  uint64_t segments_offset() const { return segments_offset_; }

 private:
  tc::TcView view_;
  uint32_t n_tables_ = 0;
  std::vector<float> mean_, step_;
  std::vector<uint8_t> table_of_;
  std::vector<uint32_t> slots_, escape_;
  // Per channel: table_of * kProbScale and the table's escape (simd::TcChannels).
  std::vector<uint32_t> channel_slot_base_, channel_escape_;
  std::vector<uint64_t> seg_begin_;
  std::shared_ptr<const std::vector<float>> rope_cs_;
  uint64_t segments_offset_ = 0;
};

// lossless with the rANS stage (lossless_rans.h): a checked block and its tables.
class LosslessRansBlock {
 public:
  // Every size, offset and table checked against the shape; Corruption otherwise.
  static Result<std::shared_ptr<const LosslessRansBlock>> Parse(
      const BlockShape& shape, std::span<const std::byte> encoded);
  // Every segment into `planes` (shape.bytes(): the lossless payload). Corruption naming the
  // segment and its tokens (rows of `channels`) when a stream is corrupt or truncated.
  Status DecodePlanes(std::span<std::byte> planes, uint32_t channels) const;

  const lrans::PlanesView& view() const { return view_; }
  // The host arrays the view points to, for a device decoder to upload.
  std::span<const uint32_t> slots() const { return slots_; }
  std::span<const uint64_t> seg_begin() const { return seg_begin_; }
  // Byte offset of the segment area within the encoded block.
  uint64_t segments_offset() const { return segments_offset_; }

 private:
  lrans::PlanesView view_;
  std::vector<uint32_t> slots_;
  std::vector<uint64_t> seg_begin_;
  uint64_t segments_offset_ = 0;
};
uint64_t MaxLosslessRansBytes(const BlockShape& shape);
// Appends the rANS stage of `planes` (the lossless payload of `shape`) to out.
Status EncodeLosslessRans(const BlockShape& shape, std::span<const std::byte> planes,
                          std::vector<std::byte>* out);
bool IsLosslessRans(const CodecSpec& codec);

// Largest tc block of this shape an encoder can write (what a header's encoded_bytes may say).
uint64_t MaxTcBlockBytes(const BlockShape& shape);
Status EncodeTcBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                     const BlockContext& context, std::span<const std::byte> src,
                     std::vector<std::byte>* out);

// Cosines and sines ([tokens][rotary_dim / 2][cos, sin], binary32 from double precision) of RoPE
// at positions position_offset + t; cached, since every key block of a file needs the same table.
std::shared_ptr<const std::vector<float>> RopeTable(uint32_t rotary_dim, float theta, float scale,
                                                    uint32_t position_offset, uint32_t tokens);

}  // namespace kdn::codec_internal

#endif  // KDN_STORE_FORMAT_CODEC_INTERNAL_H_
