#include "libkdn/deviation.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace kdn::libkdn {

Result<uint32_t> SelectionCount(float ratio, uint32_t n) {
  if (!(ratio >= 0.0f && ratio <= 1.0f)) {
    return Status::InvalidArgument("ratio " + std::to_string(ratio) + " is outside [0, 1]");
  }
  const double x = static_cast<double>(ratio) * n;
  const double nearest = std::nearbyint(x);
  // Within binary32's precision of an integer: that integer (0.15f * 100 is 15.0000006).
  const double k = std::fabs(x - nearest) <= x * 1e-6 ? nearest : std::ceil(x);
  return static_cast<uint32_t>(std::clamp(k, 0.0, static_cast<double>(n)));
}

std::vector<uint32_t> TopDeviations(std::span<const float> deviation, uint32_t k) {
  std::vector<uint32_t> idx(deviation.size());
  std::iota(idx.begin(), idx.end(), 0u);
  k = std::min<uint32_t>(k, static_cast<uint32_t>(idx.size()));
  // Strict weak order: NaN before everything, then larger first, then lower index.
  const auto before = [&](uint32_t a, uint32_t b) {
    const float x = deviation[a];
    const float y = deviation[b];
    const bool xn = std::isnan(x);
    const bool yn = std::isnan(y);
    if (xn != yn) return xn;
    if (!xn && x != y) return x > y;
    return a < b;
  };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
  idx.resize(k);
  return idx;
}

}  // namespace kdn::libkdn
