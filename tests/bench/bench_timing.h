// What the benchmark programs report (tests/bench/run): medians of several runs.
#ifndef KDN_TESTS_BENCH_BENCH_TIMING_H_
#define KDN_TESTS_BENCH_BENCH_TIMING_H_

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace kdn::bench {

// The upper middle value for an even count; 0 for none.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds of `runs` timed calls of `fn`, after one untimed warm-up call.
inline double MedianSeconds(int runs, const std::function<void()>& fn) {
  using Clock = std::chrono::steady_clock;
  fn();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return Median(std::move(t));
}

}  // namespace kdn::bench

#endif  // KDN_TESTS_BENCH_BENCH_TIMING_H_
