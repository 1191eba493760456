// raw codec: the model dtype's values as they are; decoding is a copy or a dtype conversion.
#include <cstring>

#include "kdn/codec.h"
#include "store/format/codec_internal.h"

namespace kdn::codec_internal {

void DecodeRawRows(const BlockShape& shape, std::span<const std::byte> payload, uint32_t t_begin,
                   uint32_t t_end, DType out_dtype, std::byte* out, size_t row_stride_bytes) {
  const uint64_t in_row = uint64_t{shape.channels} * DTypeSize(shape.dtype);
  const uint64_t out_row = uint64_t{shape.channels} * DTypeSize(out_dtype);
  const std::byte* src = payload.data() + in_row * t_begin;
  const uint32_t rows = t_end - t_begin;
  if (row_stride_bytes == out_row || rows == 1) {  // contiguous: one call
    ConvertDType(shape.dtype, src, out_dtype, out, uint64_t{rows} * shape.channels);
    return;
  }
  for (uint32_t r = 0; r < rows; ++r) {
    ConvertDType(shape.dtype, src + in_row * r, out_dtype, out + row_stride_bytes * r,
                 shape.channels);
  }
}

}  // namespace kdn::codec_internal
