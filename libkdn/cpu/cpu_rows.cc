#include "libkdn/cpu/cpu_rows.h"

#include <cstring>
#include <vector>

#include "libkdn/deviation.h"
#include "libkdn/element_io.h"
#include "libkdn/rope_math.h"

namespace kdn::libkdn {
namespace {

// Copies one row of n_heads heads (packed) to its place in the destination, head by head; `base`
// points at the first of those heads.
void PutRow(const DestSpec& d, std::byte* base, int64_t row, const std::byte* src,
            uint32_t n_heads) {
  const size_t head_bytes = size_t{d.head_dim} * d.elem_size;
  if (d.rows_contiguous()) {
    std::memcpy(base + row * static_cast<int64_t>(d.elem_size), src, head_bytes * n_heads);
    return;
  }
  for (uint32_t h = 0; h < n_heads; ++h) {
    std::memcpy(base + (row + h * d.head_stride) * static_cast<int64_t>(d.elem_size),
                src + h * head_bytes, head_bytes);
  }
}

void GetRow(const DestSpec& d, const std::byte* base, int64_t row, std::byte* dst) {
  const size_t head_bytes = size_t{d.head_dim} * d.elem_size;
  for (uint32_t h = 0; h < d.n_kv_heads; ++h) {
    std::memcpy(dst + h * head_bytes,
                base + (row + h * d.head_stride) * static_cast<int64_t>(d.elem_size), head_bytes);
  }
}

}  // namespace

Status DecodeTileToDest(const PreparedBlock& block, uint32_t t_begin, uint32_t t_end,
                        const HeadWindow& w, const DestSpec& dest, std::byte* base,
                        uint32_t dest_offset) {
  const DestAddressing a = dest.addressing();
  const int64_t channels = dest.channels();
  const int64_t esize = static_cast<int64_t>(dest.elem_size);
  const uint32_t c_begin = w.c_begin;
  const uint32_t c_end = c_begin + w.n_heads * dest.head_dim;
  base += w.head_begin * dest.head_stride * esize;
  if (dest.rows_contiguous()) {
    // Maximal runs of tokens whose rows are evenly spaced, at least a row apart: decoded in place.
    uint32_t t = t_begin;
    while (t < t_end) {
      const int64_t r0 = DestRowOffset(a, dest_offset + t);
      if (r0 < 0) {
        ++t;
        continue;
      }
      uint32_t n = 1;
      int64_t stride = channels;
      if (t + 1 < t_end) {
        const int64_t r1 = DestRowOffset(a, dest_offset + t + 1);
        if (r1 >= 0 && r1 - r0 >= channels) {
          stride = r1 - r0;
          n = 2;
          while (t + n < t_end && DestRowOffset(a, dest_offset + t + n) == r0 + n * stride) ++n;
        }
      }
      KDN_RETURN_IF_ERROR(block.DecodeRowChannels(t, t + n, c_begin, c_end, dest.dtype,
                                                  base + r0 * esize,
                                                  static_cast<size_t>(stride * esize)));
      t += n;
    }
    return Status::OK();
  }
  // Heads apart (HND): decode the tile packed, then place each head.
  thread_local std::vector<std::byte> scratch;
  const size_t row_bytes = static_cast<size_t>(c_end - c_begin) * static_cast<size_t>(esize);
  scratch.resize(row_bytes * (t_end - t_begin));
  KDN_RETURN_IF_ERROR(
      block.DecodeRowChannels(t_begin, t_end, c_begin, c_end, dest.dtype, scratch.data(), row_bytes));
  for (uint32_t t = t_begin; t < t_end; ++t) {
    const int64_t row = DestRowOffset(a, dest_offset + t);
    if (row >= 0) PutRow(dest, base, row, scratch.data() + (t - t_begin) * row_bytes, w.n_heads);
  }
  return Status::OK();
}

void RotateKeys(const DestSpec& dest, std::byte* base, uint32_t t_begin, uint32_t t_end,
                const RopeShift& shift, uint32_t h_begin, uint32_t h_end) {
  if (shift.style == kRopeNone || shift.rotary_dim == 0) return;
  const DestAddressing a = dest.addressing();
  const uint32_t type = static_cast<uint32_t>(dest.dtype);
  const uint32_t pairs = shift.rotary_dim / 2;
  for (uint32_t t = t_begin; t < t_end; ++t) {
    const int64_t row = DestRowOffset(a, t);
    if (row < 0) continue;
    for (uint32_t h = h_begin; h < h_end; ++h) {
      const int64_t head = row + h * dest.head_stride + shift.dim_offset;
      for (uint32_t i = 0; i < pairs; ++i) {
        uint32_t da;
        uint32_t db;
        RopePairDims(shift.style, shift.rotary_dim, i, &da, &db);
        const float x = LoadElem(base, head + da, type);
        const float y = LoadElem(base, head + db, type);
        float xo;
        float yo;
        RotatePair(x, y, shift.cos[i], shift.sin[i], &xo, &yo);
        StoreElem(base, head + da, type, xo);
        StoreElem(base, head + db, type, yo);
      }
    }
  }
}

void DeviationRows(const void* fresh, const DestSpec& cached, const std::byte* base,
                   uint32_t token_begin, uint32_t i_begin, uint32_t i_end, float* out) {
  const DestAddressing a = cached.addressing();
  const uint32_t type = static_cast<uint32_t>(cached.dtype);
  const uint32_t channels = cached.channels();
  for (uint32_t i = i_begin; i < i_end; ++i) {
    const int64_t row = DestRowOffset(a, token_begin + i);
    double acc = 0.0;
    for (uint32_t c = 0; c < channels; ++c) {
      const float f = LoadElem(fresh, int64_t{i} * channels + c, type);
      const float v = LoadElem(base, row + DestChannelOffset(a, c), type);
      acc += DeviationTerm(f, v);
    }
    out[i] = static_cast<float>(acc);
  }
}

void ScatterRowRange(const std::byte* rows, const uint32_t* tokens, uint32_t i_begin,
                     uint32_t i_end, const DestSpec& dest, std::byte* base) {
  const DestAddressing a = dest.addressing();
  const size_t row_bytes = size_t{dest.channels()} * dest.elem_size;
  for (uint32_t i = i_begin; i < i_end; ++i) {
    const int64_t row = DestRowOffset(a, tokens[i]);
    if (row >= 0) PutRow(dest, base, row, rows + i * row_bytes, dest.n_kv_heads);
  }
}

void GatherRowRange(const DestSpec& src, const std::byte* base, uint32_t t_begin, uint32_t t_end,
                    std::byte* out) {
  const DestAddressing a = src.addressing();
  const size_t row_bytes = size_t{src.channels()} * src.elem_size;
  for (uint32_t t = t_begin; t < t_end; ++t) {
    const int64_t row = DestRowOffset(a, t);
    if (row < 0) {
      std::memset(out + t * row_bytes, 0, row_bytes);
    } else {
      GetRow(src, base, row, out + t * row_bytes);
    }
  }
}

}  // namespace kdn::libkdn
