// EncodeBlock / DecodeBlock: shape and size checks, the zstd stage, dispatch to the codecs.
#include "kdn/codec.h"

#include <zstd.h>

#include <cstring>
#include <string>

#include "store/format/codec_internal.h"
#include "store/format/guard_alloc.h"
#include "store/format/limits.h"
#include "store/format/scratch.h"
#include "store/format/zstd_util.h"

namespace kdn {

namespace codec_internal {

namespace {
std::string Num(uint64_t v) {
  return std::to_string(v);
}
}  // namespace

Status ValidateShape(const BlockShape& shape) {
  if (shape.tokens < 1 || shape.tokens > limits::kMaxTokens) {
    return Status::InvalidArgument("block shape: tokens " + Num(shape.tokens) +
                                   " out of range 1.." + Num(limits::kMaxTokens));
  }
  if (shape.channels < 1 || shape.channels > limits::kMaxChannels) {
    return Status::InvalidArgument("block shape: channels " + Num(shape.channels) +
                                   " out of range 1.." + Num(limits::kMaxChannels));
  }
  if (DTypeSize(shape.dtype) == 0) {
    return Status::InvalidArgument("block shape: dtype " + Num(static_cast<int>(shape.dtype)) +
                                   " unknown");
  }
  return Status::OK();
}

bool IsLosslessRans(const CodecSpec& codec) {
  return codec.id == CodecId::kLossless && codec.rans;
}

bool HasZstdStage(const CodecSpec& codec) {
  return (codec.id == CodecId::kLossless && !codec.rans) ||
         (codec.id == CodecId::kQuant && codec.zstd);
}

uint64_t PayloadBytes(const CodecSpec& codec, KvKind kind, const BlockShape& shape) {
  if (codec.id == CodecId::kQuant) {
    return ComputeQuantLayout(kind, shape, codec.bits, codec.group_size).total;
  }
  return shape.bytes();  // raw values, or their byte planes
}

Status CheckEncodedSize(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                        uint64_t encoded_bytes) {
  if (codec.id == CodecId::kTc) {
    const uint64_t max = MaxTcBlockBytes(shape);
    if (encoded_bytes < TcBlock::kFixedBytes || encoded_bytes > max) {
      return Status::Corruption("encoded_bytes " + Num(encoded_bytes) + " out of range " +
                                Num(TcBlock::kFixedBytes) + ".." + Num(max) + " for a tc block");
    }
    return Status::OK();
  }
  if (IsLosslessRans(codec)) {
    const uint64_t max = MaxLosslessRansBytes(shape);
    if (encoded_bytes < lrans::kFixedBytes || encoded_bytes > max) {
      return Status::Corruption("encoded_bytes " + Num(encoded_bytes) + " out of range " +
                                Num(lrans::kFixedBytes) + ".." + Num(max) +
                                " for a lossless rANS block");
    }
    return Status::OK();
  }
  const uint64_t payload = PayloadBytes(codec, kind, shape);
  if (!HasZstdStage(codec)) {
    if (encoded_bytes != payload) {
      return Status::Corruption("encoded_bytes " + Num(encoded_bytes) + " does not match the " +
                                codec.Name() + " layout (" + Num(payload) + ")");
    }
    return Status::OK();
  }
  const uint64_t bound = ZSTD_compressBound(payload);
  if (encoded_bytes == 0 || encoded_bytes > bound) {
    return Status::Corruption("encoded_bytes " + Num(encoded_bytes) + " out of range 1.." +
                              Num(bound) + " for a zstd frame of " + Num(payload) + " bytes");
  }
  return Status::OK();
}

Status CheckPayload(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                    std::span<const std::byte> payload) {
  if (codec.id == CodecId::kTc) return TcBlock::Parse(shape, payload).status();
  const uint64_t want = PayloadBytes(codec, kind, shape);
  if (payload.size() != want) {
    return Status::Corruption("payload is " + Num(payload.size()) + " bytes, the " + codec.Name() +
                              " layout needs " + Num(want));
  }
  if (codec.id == CodecId::kQuant) {
    const QuantLayout q = ComputeQuantLayout(kind, shape, codec.bits, codec.group_size);
    for (uint64_t i = q.params_bytes; i < q.codes_offset; ++i) {
      if (payload[i] != std::byte{0}) {
        return Status::Corruption("quant padding at byte " + Num(i) + " is not zero");
      }
    }
  }
  return Status::OK();
}

bool NeedsWholeBlockCheck(const CodecSpec& codec) {
  return codec.id == CodecId::kTc || IsLosslessRans(codec);
}

Status UndoRansStage(const BlockShape& shape, std::span<const std::byte> encoded,
                     std::span<std::byte> planes) {
  KDN_ASSIGN_OR_RETURN(auto block, LosslessRansBlock::Parse(shape, encoded));
  return block->DecodePlanes(planes, shape.channels);
}

Status CheckWholeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                       std::span<const std::byte> encoded) {
  (void)kind;
  if (IsLosslessRans(codec)) {
    KDN_RETURN_IF_ERROR(CheckEncodedSize(codec, kind, shape, encoded.size()));
    KDN_ASSIGN_OR_RETURN(std::span<std::byte> planes,
                         scratch::Get(scratch::Slot::kPayload, shape.bytes()));
    return UndoRansStage(shape, encoded, planes);
  }
  if (codec.id != CodecId::kTc) return Status::OK();
  KDN_RETURN_IF_ERROR(CheckEncodedSize(codec, kind, shape, encoded.size()));
  KDN_ASSIGN_OR_RETURN(auto tc, TcBlock::Parse(shape, encoded));
  return tc->CheckStreams();
}

Status DecodePayloadRows(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                         std::span<const std::byte> payload, uint32_t t_begin, uint32_t t_end,
                         DType out_dtype, std::byte* out, size_t row_stride_bytes) {
  if (DTypeSize(out_dtype) == 0) {
    return Status::InvalidArgument("output dtype " + Num(static_cast<int>(out_dtype)) + " unknown");
  }
  if (t_begin > t_end || t_end > shape.tokens) {
    return Status::InvalidArgument("rows [" + Num(t_begin) + ", " + Num(t_end) +
                                   ") out of range for " + Num(shape.tokens) + " tokens");
  }
  if (t_begin == t_end) return Status::OK();
  const uint64_t row_bytes = uint64_t{shape.channels} * DTypeSize(out_dtype);
  if (out == nullptr) return Status::InvalidArgument("output is null");
  if (t_end - t_begin > 1 && row_stride_bytes < row_bytes) {
    return Status::InvalidArgument("row stride " + Num(row_stride_bytes) + " is less than a row (" +
                                   Num(row_bytes) + " bytes)");
  }
  switch (codec.id) {
    case CodecId::kRaw:
      DecodeRawRows(shape, payload, t_begin, t_end, out_dtype, out, row_stride_bytes);
      return Status::OK();
    case CodecId::kLossless:
      return DecodeLosslessRows(shape, payload, t_begin, t_end, out_dtype, out, row_stride_bytes);
    case CodecId::kQuant:
      return DecodeQuantRows(codec, kind, shape, payload, t_begin, t_end, out_dtype, out,
                             row_stride_bytes);
    case CodecId::kTc: {
      KDN_ASSIGN_OR_RETURN(auto tc, TcBlock::Parse(shape, payload));
      return tc->DecodeRows(t_begin, t_end, out_dtype, out, row_stride_bytes);
    }
  }
  return Status::InvalidArgument("codec id " + Num(static_cast<int>(codec.id)) + " unknown");
}

}  // namespace codec_internal

using namespace codec_internal;  // NOLINT(google-build-using-namespace): this file's own helpers

Status EncodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> src, std::vector<std::byte>* out) {
  return EncodeBlock(codec, kind, shape, src, out, BlockContext{});
}

Status EncodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> src, std::vector<std::byte>* out,
                   const BlockContext& context) {
  return GuardAlloc("encode", [&]() -> Status {
    KDN_RETURN_IF_ERROR(codec.Validate());
    KDN_RETURN_IF_ERROR(ValidateShape(shape));
    if (src.size() != shape.bytes()) {
      return Status::InvalidArgument("encode: source is " + std::to_string(src.size()) +
                                     " bytes, the shape needs " + std::to_string(shape.bytes()));
    }
    if (kind != KvKind::kKey && kind != KvKind::kValue) {
      return Status::InvalidArgument("encode: block kind unknown");
    }
    if (codec.id == CodecId::kTc) {
      const size_t at = out->size();
      Status st = EncodeTcBlock(codec, kind, shape, context, src, out);
      if (!st.ok()) out->resize(at);
      return st;
    }
    const uint64_t payload_bytes = PayloadBytes(codec, kind, shape);
    if (!HasZstdStage(codec) && !IsLosslessRans(codec)) {
      const size_t at = out->size();
      out->resize(at + payload_bytes);
      const std::span<std::byte> dst(out->data() + at, payload_bytes);
      if (codec.id == CodecId::kRaw) {
        std::memcpy(dst.data(), src.data(), src.size());
        return Status::OK();
      }
      Status st = EncodeQuantPayload(codec, kind, shape, src, dst);
      if (!st.ok()) out->resize(at);
      return st;
    }
    KDN_ASSIGN_OR_RETURN(std::span<std::byte> payload,
                         scratch::Get(scratch::Slot::kPayload, payload_bytes));
    if (codec.id == CodecId::kLossless) {
      EncodeLosslessPayload(shape, src, payload);
      if (codec.rans) {
        const size_t at = out->size();
        Status st = EncodeLosslessRans(shape, payload, out);
        if (!st.ok()) out->resize(at);
        return st;
      }
    } else {
      KDN_RETURN_IF_ERROR(EncodeQuantPayload(codec, kind, shape, src, payload));
    }
    return zstd::CompressAppend(payload, codec.zstd_level, out);
  });
}

Status DecodeBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                   std::span<const std::byte> encoded, DType out_dtype, std::span<std::byte> out) {
  return GuardAlloc("decode", [&]() -> Status {
    KDN_RETURN_IF_ERROR(codec.Validate());
    KDN_RETURN_IF_ERROR(ValidateShape(shape));
    if (DTypeSize(out_dtype) == 0) return Status::InvalidArgument("decode: output dtype unknown");
    const uint64_t need = shape.elements() * DTypeSize(out_dtype);
    if (out.size() < need) {
      return Status::InvalidArgument("decode: output is " + std::to_string(out.size()) +
                                     " bytes, the block needs " + std::to_string(need));
    }
    std::span<const std::byte> payload = encoded;
    if (HasZstdStage(codec)) {
      KDN_RETURN_IF_ERROR(CheckEncodedSize(codec, kind, shape, encoded.size()));
      KDN_ASSIGN_OR_RETURN(std::span<std::byte> buf,
                           scratch::Get(scratch::Slot::kPayload, PayloadBytes(codec, kind, shape)));
      KDN_RETURN_IF_ERROR(zstd::DecompressExact(encoded, buf));
      payload = buf;
    } else if (IsLosslessRans(codec)) {
      KDN_RETURN_IF_ERROR(CheckEncodedSize(codec, kind, shape, encoded.size()));
      KDN_ASSIGN_OR_RETURN(std::span<std::byte> buf,
                           scratch::Get(scratch::Slot::kPayload, shape.bytes()));
      KDN_RETURN_IF_ERROR(UndoRansStage(shape, encoded, buf));
      payload = buf;
    }
    KDN_RETURN_IF_ERROR(CheckPayload(codec, kind, shape, payload));
    return DecodePayloadRows(codec, kind, shape, payload, 0, shape.tokens, out_dtype, out.data(),
                             uint64_t{shape.channels} * DTypeSize(out_dtype));
  });
}

}  // namespace kdn
