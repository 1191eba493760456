// Benchmark of the chunk store: sequential write and read of 1 GiB of chunks of one size (each
// write includes hashing, fdatasync and the metadata commit; each read verifies every block), and
// put/get latency percentiles of small chunks. Prints `name: value` lines; tests/bench/groups/store
// runs it next to fio and turns the speeds into ratios.
//   kdn_bench_store DIR [--chunk-mib N] [--total-mib N] [--runs N] [--warmup N] [--writers N]
//                   [--readers N] [--fresh] [--latency]
// DIR is a store, created if needed (--fresh: recreated). Every run releases what it wrote, so a
// store left by a warm-up has its segments allocated and written, as a store in service does.
// With several writers (or readers), each takes a contiguous share of the chunks, as kdnfs's
// threads do for files closed (or read) at the same time.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kdn/store.h"
#include "tests/bench/bench_timing.h"

namespace {

using kdn::bench::Median;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

// Page-aligned, touched once up front (first touches are expensive on this VM).
std::byte* AlignedBytes(size_t n) {
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  std::memset(p, 0, n);
  return static_cast<std::byte*>(p);
}

void Fill(std::byte* p, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t x = rng();
    std::memcpy(p + i, &x, 8);
  }
}

[[noreturn]] void Die(const kdn::Status& s, const char* what) {
  std::fprintf(stderr, "bench_store: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

std::unique_ptr<kdn::Store> OpenStore(const std::string& dir, bool fresh) {
  std::error_code ec;
  if (fresh) std::filesystem::remove_all(dir, ec);
  auto store = kdn::Store::Open(dir);
  if (!store.ok()) Die(store.status(), "open");
  return std::move(*store);
}

// Splits [0, count) into `threads` contiguous shares and runs fn(thread, begin, end) on each.
template <typename Fn>
void Parallel(size_t threads, size_t count, Fn fn) {
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back(fn, t, count * t / threads, count * (t + 1) / threads);
  }
  for (auto& th : pool) th.join();
}

// One run: write `count` chunks (distinct content: the first bytes carry run, thread and index),
// read them all back, release them. Returns {write seconds, read seconds}.
std::pair<double, double> SequentialRun(kdn::Store& store, std::vector<std::byte*>& data,
                                        std::vector<std::byte*>& out, size_t chunk, size_t count,
                                        uint64_t run) {
  std::vector<kdn::ChunkId> ids(count);
  auto t0 = Clock::now();
  Parallel(data.size(), count, [&](size_t t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      uint64_t tag[2] = {run, i};
      std::memcpy(data[t], tag, sizeof(tag));
      auto id = store.Put({data[t], chunk});
      if (!id.ok()) Die(id.status(), "put");
      ids[i] = *id;
    }
  });
  auto t1 = Clock::now();
  Parallel(out.size(), count, [&](size_t t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      auto n = store.Get(ids[i], 0, {out[t], chunk});
      if (!n.ok() || *n != chunk) Die(n.ok() ? kdn::Status::IOError("short") : n.status(), "get");
    }
  });
  auto t2 = Clock::now();
  for (const kdn::ChunkId& id : ids) {
    if (kdn::Status s = store.Release(id); !s.ok()) Die(s, "release");
  }
  return {Seconds(t0, t1), Seconds(t1, t2)};
}

void Latency(kdn::Store& store, size_t size, const char* label, int n) {
  std::byte* data = AlignedBytes(size);
  std::byte* out = AlignedBytes(size);
  Fill(data, size, 7);
  std::vector<kdn::ChunkId> ids;
  std::vector<double> put_us, get_us;
  for (int i = 0; i < n; ++i) {
    uint64_t tag = static_cast<uint64_t>(i) + 1000000;
    std::memcpy(data, &tag, sizeof(tag));
    auto t0 = Clock::now();
    auto id = store.Put({data, size});
    put_us.push_back(Seconds(t0, Clock::now()) * 1e6);
    if (!id.ok()) Die(id.status(), "put");
    ids.push_back(*id);
  }
  std::mt19937_64 rng(3);
  std::shuffle(ids.begin(), ids.end(), rng);
  for (const kdn::ChunkId& id : ids) {
    auto t0 = Clock::now();
    auto got = store.Get(id, 0, {out, size});
    get_us.push_back(Seconds(t0, Clock::now()) * 1e6);
    if (!got.ok()) Die(got.status(), "get");
  }
  for (const kdn::ChunkId& id : ids) (void)store.Release(id);
  std::printf("store_put_%s_p50_us: %.1f\n", label, Percentile(put_us, 0.50));
  std::printf("store_put_%s_p99_us: %.1f\n", label, Percentile(put_us, 0.99));
  std::printf("store_get_%s_p50_us: %.1f\n", label, Percentile(get_us, 0.50));
  std::printf("store_get_%s_p99_us: %.1f\n", label, Percentile(get_us, 0.99));
  ::munmap(data, size);
  ::munmap(out, size);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help") {
    std::fprintf(stderr,
                 "usage: kdn_bench_store DIR [--chunk-mib N] [--total-mib N] [--runs N] "
                 "[--latency]\n");
    return argc < 2 ? 2 : 0;
  }
  const std::string dir = argv[1];
  size_t chunk_mib = 8, total_mib = 1024, writers = 1, readers = 1;
  int runs = 3, warmup = 1;
  bool latency = false, fresh = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--chunk-mib" && i + 1 < argc) {
      chunk_mib = std::strtoul(argv[++i], nullptr, 10);
    } else if (a == "--total-mib" && i + 1 < argc) {
      total_mib = std::strtoul(argv[++i], nullptr, 10);
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else if (a == "--writers" && i + 1 < argc) {
      writers = std::max<size_t>(1, std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--readers" && i + 1 < argc) {
      readers = std::max<size_t>(1, std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--warmup" && i + 1 < argc) {
      warmup = std::atoi(argv[++i]);
    } else if (a == "--fresh") {
      fresh = true;
    } else if (a == "--latency") {
      latency = true;
    } else {
      std::fprintf(stderr, "bench_store: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  auto store = OpenStore(dir, fresh);
  if (latency) {
    Latency(*store, 4096, "4k", 2000);
    Latency(*store, 65536, "64k", 1000);
    return 0;
  }
  const size_t chunk = chunk_mib << 20;
  const size_t count = std::max<size_t>(1, total_mib / chunk_mib);
  std::vector<std::byte*> data(writers), out(readers);
  for (size_t t = 0; t < writers; ++t) {
    data[t] = AlignedBytes(chunk);
    Fill(data[t], chunk, 1 + t);
  }
  for (size_t t = 0; t < readers; ++t) out[t] = AlignedBytes(chunk);
  // Warm-up: allocates the segments and warms every cache; later runs reuse the space.
  for (int w = 0; w < warmup; ++w) SequentialRun(*store, data, out, chunk, count, 1000 + w);
  std::vector<double> write_gbps, read_gbps;
  for (int r = 1; r <= runs; ++r) {
    auto [w, rd] = SequentialRun(*store, data, out, chunk, count, static_cast<uint64_t>(r));
    const double bytes = static_cast<double>(chunk) * static_cast<double>(count);
    write_gbps.push_back(bytes / w / 1e9);
    read_gbps.push_back(bytes / rd / 1e9);
    std::fprintf(stderr,
                 "  store %zu MiB chunks, run %d: write %.2f GB/s (%zu writers), read %.2f GB/s "
                 "(%zu readers)\n",
                 chunk_mib, r, write_gbps.back(), writers, read_gbps.back(), readers);
  }
  if (runs > 0) {
    std::printf("store_write_gbps_%zumib: %.3f\n", chunk_mib, Median(write_gbps));
    std::printf("store_read_gbps_%zumib: %.3f\n", chunk_mib, Median(read_gbps));
  }
  std::fprintf(stderr, "  io engine: %s\n", store->Stats().io_engine.c_str());
  return 0;
}
