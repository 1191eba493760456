// Lock-free latency histogram for /.kdn/stats and /.kdn/metrics: log-linear buckets (4 per power
// of two), so a percentile is known within 25% whatever the scale, and the count at or below
// 2^k - 1 ns is exact (a bucket ends there), which /.kdn/metrics exposes as Prometheus buckets.
#ifndef KDN_STORE_LATENCY_HISTOGRAM_H_
#define KDN_STORE_LATENCY_HISTOGRAM_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <vector>

namespace kdn::store {

class LatencyHistogram {
 public:
  void Record(uint64_t ns) {
    buckets_[Bucket(ns)].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
    uint64_t prev = max_.load(std::memory_order_relaxed);
    while (ns > prev && !max_.compare_exchange_weak(prev, ns, std::memory_order_relaxed)) {
    }
  }
  // Upper bound of the bucket holding quantile q (0..1); 0 when empty.
  uint64_t Percentile(double q) const {
    uint64_t total = 0;
    std::array<uint64_t, kBuckets> snap;
    for (size_t i = 0; i < kBuckets; ++i)
      total += snap[i] = buckets_[i].load(std::memory_order_relaxed);
    if (total == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1, seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += snap[i];
      if (seen >= rank) return std::min(UpperBound(i), max());
    }
    return max();
  }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  uint64_t sum() const { return sum_.load(std::memory_order_relaxed); }
  // Samples at or below 2^k - 1 ns for k = first..last, then all of them: cumulative counts
  // taken from one pass, so that they never decrease even while samples arrive.
  std::vector<uint64_t> CumulativeAtPowersOfTwo(int first, int last) const {
    std::vector<uint64_t> out;
    uint64_t seen = 0;
    size_t i = 0;
    for (int k = first; k <= last; ++k) {
      // Buckets below index 4k end at or below 2^k - 1 (index 4k starts at 2^k).
      for (; i < std::min(kBuckets, static_cast<size_t>(k) * 4); ++i)
        seen += buckets_[i].load(std::memory_order_relaxed);
      out.push_back(seen);
    }
    for (; i < kBuckets; ++i) seen += buckets_[i].load(std::memory_order_relaxed);
    out.push_back(seen);
    return out;
  }

 private:
  static constexpr size_t kBuckets = 64 * 4;
  static size_t Bucket(uint64_t ns) {
    if (ns < 4) return static_cast<size_t>(ns);
    int log = 63 - std::countl_zero(ns);   // ns in [2^log, 2^(log+1))
    uint64_t sub = (ns >> (log - 2)) & 3;  // quarter within that range
    return static_cast<size_t>(log) * 4 + static_cast<size_t>(sub);
  }
  static uint64_t UpperBound(size_t bucket) {
    if (bucket < 4) return bucket;
    size_t log = bucket / 4, sub = bucket % 4;
    if (log >= 63) return UINT64_MAX;
    return (uint64_t{1} << log) + ((sub + 1) << (log - 2)) - 1;
  }
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> max_{0};
  std::atomic<uint64_t> sum_{0};
};

}  // namespace kdn::store

#endif  // KDN_STORE_LATENCY_HISTOGRAM_H_
