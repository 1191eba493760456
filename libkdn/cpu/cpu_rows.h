// Row-level work of the CPU backend on a destination in host memory: decoding a token tile into
// its rows, re-rotating keys, deviation, scatter and gather. The per-element arithmetic is the
// KDN_HD code the CUDA kernels run (element_io.h, rope_math.h, deviation.h).
#ifndef KDN_LIBKDN_CPU_CPU_ROWS_H_
#define KDN_LIBKDN_CPU_CPU_ROWS_H_

#include <cstddef>
#include <cstdint>

#include "libkdn/dest.h"
#include "libkdn/load_request.h"
#include "kdn/codec.h"
#include "kdn/status.h"

namespace kdn::libkdn {

// Which heads of a destination row a block fills: destination heads [head_begin, head_begin +
// n_heads) receive the block's channels [c_begin, c_begin + n_heads * head_dim). A whole load of a
// file of one head group: all destination heads from channel 0; a tensor-parallel rank's: all its
// heads from its first head's channel; one head group's block: the heads it shares with the rank.
struct HeadWindow {
  uint32_t c_begin = 0;
  uint32_t head_begin = 0;
  uint32_t n_heads = 0;
};

// Decodes block tokens [t_begin, t_end) into `base` (one layer's K or V), block token t going to
// destination token dest_offset + t, into the heads `w` says. Rows that lie evenly spaced in
// memory (contiguous and NHD layouts) are decoded in place; otherwise (HND) the tile goes through
// a per-thread scratch buffer and is scattered head by head.
Status DecodeTileToDest(const PreparedBlock& block, uint32_t t_begin, uint32_t t_end,
                        const HeadWindow& w, const DestSpec& dest, std::byte* base,
                        uint32_t dest_offset);

// Re-rotates the keys of destination heads [h_begin, h_end) of destination tokens [t_begin, t_end)
// in `base`.
void RotateKeys(const DestSpec& dest, std::byte* base, uint32_t t_begin, uint32_t t_end,
                const RopeShift& shift, uint32_t h_begin, uint32_t h_end);

// Deviation of fresh rows [i_begin, i_end) (fresh row i = destination token token_begin + i).
void DeviationRows(const void* fresh, const DestSpec& cached, const std::byte* base,
                   uint32_t token_begin, uint32_t i_begin, uint32_t i_end, float* out);

// Copies rows[i] to destination token tokens[i] for i in [i_begin, i_end).
void ScatterRowRange(const std::byte* rows, const uint32_t* tokens, uint32_t i_begin,
                     uint32_t i_end, const DestSpec& dest, std::byte* base);

// Copies destination tokens [t_begin, t_end) to out rows [t_begin, t_end) (zeros for a token the
// slot mapping skips).
void GatherRowRange(const DestSpec& src, const std::byte* base, uint32_t t_begin, uint32_t t_end,
                    std::byte* out);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CPU_CPU_ROWS_H_
