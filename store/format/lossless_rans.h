// The lossless codec's rANS stage: the decoder of one segment of byte planes, written once for
// the CPU and the GPU (KDN_HD). docs/kv-format.md, "lossless with the rANS stage", fixes the
// bytes: one static table per byte plane, and segments of whole elements, each coding its
// elements' bytes plane after plane with rans.h's interleaved lanes, so that every segment
// decodes on its own (one GPU thread each).
//
// PlanesView holds what the host derived from a checked block (codec_lossless_rans.cc).
//
// C++17 on purpose: nvcc compiles this header too.
#ifndef KDN_STORE_FORMAT_LOSSLESS_RANS_H_
#define KDN_STORE_FORMAT_LOSSLESS_RANS_H_

#include <stdint.h>

#include "store/format/rans.h"

namespace kdn::lrans {

inline constexpr uint32_t kFixedBytes = 16;
// Segments hold at least this many elements (or the whole block): bounds their count, and so the
// size a reader accepts, by the block's values.
inline constexpr uint32_t kMinSegElements = 256;

struct PlanesView {
  uint64_t elements = 0;
  uint32_t planes = 0;        // bytes per element (2 or 4)
  uint32_t seg_elements = 0;
  uint32_t n_segments = 0;
  const uint32_t* slots = nullptr;      // [planes][rans::kProbScale]
  const uint8_t* segments = nullptr;    // the segment area
  const uint64_t* seg_begin = nullptr;  // [n_segments + 1], byte offsets into `segments`
};

// Elements of segment `seg`: [seg * seg_elements, min(+seg_elements, elements)).
KDN_HD uint64_t SegmentElements(const PlanesView& v, uint32_t seg) {
  const uint64_t e0 = uint64_t{seg} * v.seg_elements;
  const uint64_t left = v.elements - e0;
  return left < v.seg_elements ? left : v.seg_elements;
}

// Decodes segment `seg` into `planes` (planes[p * elements + e], the lossless payload). False
// when the segment is corrupt or truncated (its bytes are then unspecified, every write in
// bounds).
KDN_HD bool DecodePlaneSegment(const PlanesView& v, uint32_t seg, uint8_t* planes) {
  rans::RansDecoder d(v.segments + v.seg_begin[seg], v.segments + v.seg_begin[seg + 1]);
  if (!d.ok()) return false;
  const uint64_t e0 = uint64_t{seg} * v.seg_elements;
  const uint64_t n = SegmentElements(v, seg);
  for (uint32_t p = 0; p < v.planes; ++p) {
    uint8_t* out = planes + p * v.elements + e0;
    const uint32_t* slots = v.slots + p * rans::kProbScale;
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(d.Decode(slots));
  }
  return d.Finish();
}

}  // namespace kdn::lrans

#endif  // KDN_STORE_FORMAT_LOSSLESS_RANS_H_
