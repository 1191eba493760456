// The scalar tc kernels: tc_math.h itself, the reference every vector kernel matches bit for bit
// (and the code the CUDA kernels run).
#include "store/format/simd.h"
#include "store/format/tc_math.h"

namespace kdn::simd {

namespace {

bool DecodeSegmentScalar(const tc::TcView& v, const TcChannels& /*ch*/, uint32_t seg,
                         int16_t* q) {
  return tc::DecodeSegment(v, seg, q);
}

void ReconstructRowScalar(const tc::TcView& v, const int16_t* qrow, uint32_t t, float* x) {
  const uint32_t heads = v.channels / v.head_dim;
  for (uint32_t h = 0; h < heads; ++h) {
    tc::ReconstructHead(v, qrow, t, h, x + uint64_t{h} * v.head_dim);
  }
}

}  // namespace

void FillTcScalar(Kernels* k) {
  k->tc_decode_segment = DecodeSegmentScalar;
  k->tc_reconstruct_row = ReconstructRowScalar;
}

}  // namespace kdn::simd
