// lossless codec: each value rotated left by one bit (the sign to bit 0, so the top byte of bf16
// and fp32 is exactly the exponent), split into byte planes, most significant first; the zstd
// stage then finds the long runs that the exponent plane holds.
#include <algorithm>

#include "kdn/codec.h"
#include "store/format/codec_internal.h"
#include "store/format/scratch.h"
#include "store/format/simd.h"

namespace kdn::codec_internal {

void EncodeLosslessPayload(const BlockShape& shape, std::span<const std::byte> src,
                           std::span<std::byte> dst) {
  const size_t s = DTypeSize(shape.dtype);
  simd::ActiveKernels().plane[simd::PlaneIndex(s)](
      src.data(), shape.elements(), reinterpret_cast<uint8_t*>(dst.data()), shape.elements(), 0);
}

Status DecodeLosslessRows(const BlockShape& shape, std::span<const std::byte> payload,
                          uint32_t t_begin, uint32_t t_end, DType out_dtype, std::byte* out,
                          size_t row_stride_bytes) {
  const simd::Kernels& k = simd::ActiveKernels();
  const size_t s = DTypeSize(shape.dtype);
  const simd::UnplaneFn unplane = k.unplane[simd::PlaneIndex(s)];
  const auto* planes = reinterpret_cast<const uint8_t*>(payload.data());
  const uint64_t stride = shape.elements();
  const uint64_t c = shape.channels;
  const uint64_t out_row = c * DTypeSize(out_dtype);
  const uint32_t rows = t_end - t_begin;
  const bool contiguous = row_stride_bytes == out_row || rows == 1;

  if (out_dtype == shape.dtype) {
    if (contiguous) {
      unplane(planes, stride, c * t_begin, c * rows, out);
    } else {
      for (uint32_t r = 0; r < rows; ++r) {
        unplane(planes, stride, c * (t_begin + r), c, out + row_stride_bytes * r);
      }
    }
    return Status::OK();
  }
  // Another dtype: through a small tile in the model dtype, so that it stays in cache.
  constexpr uint64_t kTileElements = 8192;
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> tile,
                       scratch::Get(scratch::Slot::kTile, kTileElements * 4));
  auto run = [&](uint64_t first, uint64_t n, std::byte* dst) {
    for (uint64_t done = 0; done < n; done += kTileElements) {
      const uint64_t m = std::min(kTileElements, n - done);
      unplane(planes, stride, first + done, m, tile.data());
      ConvertDType(shape.dtype, tile.data(), out_dtype, dst + done * DTypeSize(out_dtype), m);
    }
  };
  if (contiguous) {
    run(c * t_begin, c * rows, out);
  } else {
    for (uint32_t r = 0; r < rows; ++r) run(c * (t_begin + r), c, out + row_stride_bytes * r);
  }
  return Status::OK();
}

}  // namespace kdn::codec_internal
