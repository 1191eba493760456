// Which tokens to recompute when blending: CacheBlend's selection by KV deviation.
//
// A token's deviation is the sum over its channels of (fresh - cached)^2, each difference taken in
// double from the two binary32 values and accumulated in double (exact enough that the order of
// summation, which differs between the CPU and the GPU, changes the rounded binary32 result only
// in rare last-bit cases). Selection runs on the host: the ceil(ratio * n) largest, ties broken by
// the lower index, NaN counted as the largest (a token whose recomputation produced NaN is the
// last one to trust).
#ifndef KDN_LIBKDN_DEVIATION_H_
#define KDN_LIBKDN_DEVIATION_H_

#include <stdint.h>

#include <span>
#include <vector>

#include "kdn/status.h"
#include "store/format/element_math.h"  // KDN_HD

namespace kdn::libkdn {

KDN_HD double DeviationTerm(float fresh, float cached) {
  const double d = static_cast<double>(fresh) - static_cast<double>(cached);
#if defined(__CUDA_ARCH__)
  return __dmul_rn(d, d);
#else
  return d * d;
#endif
}

// ceil(ratio * n) for ratio in [0, 1], computed so that a ratio written in decimal (0.15 as a
// float is 0.1500000059...) does not round up past the intended count. InvalidArgument for a
// ratio outside [0, 1] or NaN.
Result<uint32_t> SelectionCount(float ratio, uint32_t n);

// Indices of the k largest deviations, largest first, ties by lower index, NaN first.
std::vector<uint32_t> TopDeviations(std::span<const float> deviation, uint32_t k);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_DEVIATION_H_
