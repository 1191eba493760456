// PreparedBlock: a block with its zstd stage undone and its layout checked, decoded by row ranges.
#include <cstring>
#include <new>
#include <string>

#include "kdn/codec.h"
#include "store/format/codec_internal.h"
#include "store/format/scratch.h"
#include "store/format/simd.h"
#include "store/format/zstd_util.h"

namespace kdn {

using namespace codec_internal;  // NOLINT(google-build-using-namespace)

PreparedBlock::PreparedBlock(const PreparedBlock& other)
    : codec_(other.codec_),
      kind_(other.kind_),
      shape_(other.shape_),
      owned_(other.owned_),
      payload_(other.payload_),
      codes_offset_(other.codes_offset_),
      tc_(other.tc_) {
  if (!other.owned_.empty() && other.payload_.data() == other.owned_.data()) {
    payload_ = std::span<const std::byte>(owned_.data(), owned_.size());
  }
}

PreparedBlock& PreparedBlock::operator=(const PreparedBlock& other) {
  if (this != &other) {
    PreparedBlock copy(other);
    *this = std::move(copy);
  }
  return *this;
}

Result<PreparedBlock> PreparedBlock::Prepare(const CodecSpec& codec, KvKind kind,
                                             const BlockShape& shape,
                                             std::span<const std::byte> encoded) {
  KDN_RETURN_IF_ERROR(codec.Validate());
  KDN_RETURN_IF_ERROR(ValidateShape(shape));
  if (kind != KvKind::kKey && kind != KvKind::kValue) {
    return Status::InvalidArgument("prepare: block kind unknown");
  }
  KDN_RETURN_IF_ERROR(CheckEncodedSize(codec, kind, shape, encoded.size()));
  PreparedBlock b;
  b.codec_ = codec;
  b.kind_ = kind;
  b.shape_ = shape;
  if (HasZstdStage(codec)) {
    const uint64_t n = PayloadBytes(codec, kind, shape);
    try {
      b.owned_.resize(n);
    } catch (const std::bad_alloc&) {
      return Status::NoSpace("prepare: cannot allocate " + std::to_string(n) + " bytes");
    }
    KDN_RETURN_IF_ERROR(zstd::DecompressExact(encoded, b.owned_));
    b.payload_ = b.owned_;
  } else if (IsLosslessRans(codec)) {
    // The rANS stage undone as the zstd stage is (lossless_rans.h; a device decodes the same
    // segments from the encoded block).
    try {
      b.owned_.resize(shape.bytes());
    } catch (const std::bad_alloc&) {
      return Status::NoSpace("prepare: cannot allocate " + std::to_string(shape.bytes()) +
                             " bytes");
    }
    KDN_RETURN_IF_ERROR(UndoRansStage(shape, encoded, b.owned_));
    b.payload_ = b.owned_;
  } else {
    b.payload_ = encoded;
  }
  if (codec.id == CodecId::kTc) {
    KDN_ASSIGN_OR_RETURN(b.tc_, TcBlock::Parse(shape, b.payload_));
    return b;
  }
  KDN_RETURN_IF_ERROR(CheckPayload(codec, kind, shape, b.payload_));
  if (codec.id == CodecId::kQuant) {
    b.codes_offset_ = ComputeQuantLayout(kind, shape, codec.bits, codec.group_size).codes_offset;
  }
  return b;
}

Status PreparedBlock::DecodeRows(uint32_t t_begin, uint32_t t_end, DType out_dtype, std::byte* out,
                                 size_t row_stride_bytes) const {
  if (shape_.tokens == 0) {
    if (t_begin == 0 && t_end == 0) return Status::OK();
    return Status::InvalidArgument("decode rows: the block is empty");
  }
  if (tc_) {
    // The argument checks of DecodePayloadRows, without parsing the block again.
    if (DTypeSize(out_dtype) == 0) return Status::InvalidArgument("output dtype unknown");
    if (t_begin > t_end || t_end > shape_.tokens) {
      return Status::InvalidArgument("rows [" + std::to_string(t_begin) + ", " +
                                     std::to_string(t_end) + ") out of range for " +
                                     std::to_string(shape_.tokens) + " tokens");
    }
    if (t_begin == t_end) return Status::OK();
    const uint64_t row_bytes = uint64_t{shape_.channels} * DTypeSize(out_dtype);
    if (out == nullptr) return Status::InvalidArgument("output is null");
    if (t_end - t_begin > 1 && row_stride_bytes < row_bytes) {
      return Status::InvalidArgument("row stride is less than a row");
    }
    return tc_->DecodeRows(t_begin, t_end, out_dtype, out, row_stride_bytes);
  }
  return DecodePayloadRows(codec_, kind_, shape_, payload_, t_begin, t_end, out_dtype, out,
                           row_stride_bytes);
}

Status PreparedBlock::DecodeRowChannels(uint32_t t_begin, uint32_t t_end, uint32_t c_begin,
                                        uint32_t c_end, DType out_dtype, std::byte* out,
                                        size_t row_stride_bytes) const {
  if (c_begin >= c_end || c_end > shape_.channels) {
    return Status::InvalidArgument("decode channels [" + std::to_string(c_begin) + ", " +
                                   std::to_string(c_end) + ") out of range for " +
                                   std::to_string(shape_.channels) + " channels");
  }
  if (c_begin == 0 && c_end == shape_.channels) {
    return DecodeRows(t_begin, t_end, out_dtype, out, row_stride_bytes);
  }
  const size_t out_size = DTypeSize(out_dtype);
  if (out_size == 0) return Status::InvalidArgument("output dtype unknown");
  if (t_begin > t_end || t_end > shape_.tokens) {
    return Status::InvalidArgument("rows [" + std::to_string(t_begin) + ", " +
                                   std::to_string(t_end) + ") out of range for " +
                                   std::to_string(shape_.tokens) + " tokens");
  }
  if (t_begin == t_end) return Status::OK();
  if (out == nullptr) return Status::InvalidArgument("output is null");
  const uint32_t n = c_end - c_begin;
  const size_t slice_bytes = size_t{n} * out_size;
  if (t_end - t_begin > 1 && row_stride_bytes < slice_bytes) {
    return Status::InvalidArgument("row stride is less than a slice");
  }
  const uint64_t channels = shape_.channels;
  const size_t model_size = DTypeSize(shape_.dtype);
  switch (codec_.id) {
    case CodecId::kRaw:
      for (uint32_t t = t_begin; t < t_end; ++t) {
        ConvertDType(shape_.dtype, payload_.data() + (channels * t + c_begin) * model_size,
                     out_dtype, out + row_stride_bytes * (t - t_begin), n);
      }
      return Status::OK();
    case CodecId::kLossless: {
      const simd::UnplaneFn unplane = simd::ActiveKernels().unplane[simd::PlaneIndex(model_size)];
      const auto* planes = reinterpret_cast<const uint8_t*>(payload_.data());
      std::byte* tile = nullptr;
      if (out_dtype != shape_.dtype) {
        KDN_ASSIGN_OR_RETURN(std::span<std::byte> buf,
                             scratch::Get(scratch::Slot::kRows, size_t{n} * model_size));
        tile = buf.data();
      }
      for (uint32_t t = t_begin; t < t_end; ++t) {
        std::byte* dst = out + row_stride_bytes * (t - t_begin);
        if (tile == nullptr) {
          unplane(planes, shape_.elements(), channels * t + c_begin, n, dst);
        } else {
          unplane(planes, shape_.elements(), channels * t + c_begin, n, tile);
          ConvertDType(shape_.dtype, tile, out_dtype, dst, n);
        }
      }
      return Status::OK();
    }
    case CodecId::kQuant: {
      Status st;
      if (DecodeQuantRowChannels(codec_, kind_, shape_, payload_, t_begin, t_end, c_begin, c_end,
                                 out_dtype, out, row_stride_bytes, &st)) {
        return st;
      }
      [[fallthrough]];  // a slice whose codes do not start on a byte: whole rows
    }
    case CodecId::kTc: {
      const size_t row_bytes = channels * out_size;
      KDN_ASSIGN_OR_RETURN(std::span<std::byte> rows,
                           scratch::Get(scratch::Slot::kRows, row_bytes * (t_end - t_begin)));
      KDN_RETURN_IF_ERROR(DecodeRows(t_begin, t_end, out_dtype, rows.data(), row_bytes));
      for (uint32_t t = t_begin; t < t_end; ++t) {
        std::memcpy(out + row_stride_bytes * (t - t_begin),
                    rows.data() + row_bytes * (t - t_begin) + size_t{c_begin} * out_size,
                    slice_bytes);
      }
      return Status::OK();
    }
  }
  return Status::InvalidArgument("codec id unknown");
}

uint32_t PreparedBlock::row_granularity() const {
  return tc_ ? tc_->view().seg_tokens : 1;
}

}  // namespace kdn
