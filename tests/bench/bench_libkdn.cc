// Benchmark of the engine library (group `engine`): decode throughput of libkdn against memcpy.
//
// CPU backend: kdn_load of every layer of a synthetic llama3-8b cache (4096 tokens, fp16, 512 MiB
// decoded) into a contiguous host destination, per codec, with one worker and with all workers;
// GB/s counts output bytes, against memcpy of the same size (one thread, and all threads).
// CUDA backend (when a device is present): the decode kernels alone against a device-to-device
// cudaMemcpy of the same output size, and file -> device through kdn_load against pread +
// cudaMemcpy of the file's bytes. One file, many GPUs (CPU backend): bytes read (counted by the
// kernel, /proc/self/io) and time of one tensor-parallel rank of 8 (kdn_load_heads of one KV head
// of 8) and of one pipeline stage of 4 (a quarter of the layers) against a full load of the same
// file, on files of one head group and of 8 (`_g8`: a rank reads only its group's blocks; goal
// tp8_rank_bytes_vs_full <= 1/8 + 5% = 0.175), and the 8-group file's size against the other's.
// Prints `name: value` lines; notes go to stderr.
//   kdn_bench_libkdn DIR RUNS
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "kdn/kdn.h"
#include "kdn/synthetic.h"
#include "tests/bench/bench_timing.h"

#if KDN_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "libkdn/cuda/decode_launch.h"
#endif

namespace {

using kdn::bench::Median;
using kdn::bench::MedianSeconds;

constexpr uint32_t kTokens = 4096;
const char* const kCodecs[] = {"raw", "lossless", "q8", "q4"};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "kdn_bench_libkdn: %s\n", what.c_str());
  std::exit(1);
}

void Check(kdn_status s, const char* what) {
  if (s != KDN_OK) Die(std::string(what) + ": " + kdn_status_name(s) + ": " + kdn_last_error());
}

void Print(const std::string& name, double value) {
  std::printf("%s: %.3f\n", name.c_str(), value);
}

// The synthetic cache for `codec` in `dir` (in `head_groups` head groups), written once and reused
// by later runs.
std::string CacheFile(const std::string& dir, const kdn::ModelIdentity& m, const char* codec,
                      uint32_t head_groups = 1) {
  std::string name = codec;
  for (char& c : name) {
    if (c == '+' || c == ':') c = '_';
  }
  const std::string path = dir + "/engine-" + m.name + "-" + std::to_string(kTokens) +
                           (m.layer_windows.empty() ? "" : "-window") +
                           (head_groups > 1 ? "-g" + std::to_string(head_groups) : "") + "-" +
                           name + ".kv";
  if (kdn::KvReader::Open(path).ok()) return path;
  std::fprintf(stderr, "# writing %s\n", path.c_str());
  kdn::Result<kdn::CodecSpec> spec = kdn::CodecSpec::Parse(codec);
  if (!spec.ok()) Die(spec.status().ToString());
  kdn::Result<std::vector<std::byte>> bytes =
      kdn::SynthesizeKvFile(m, kTokens, *spec, 1, 0, head_groups);
  if (!bytes.ok()) Die(bytes.status().ToString());
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes->data(), 1, bytes->size(), f) != bytes->size() ||
      std::fclose(f) != 0) {
    Die("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) Die("cannot rename " + tmp);
  return path;
}

// memcpy of `bytes` with `threads` threads, GB/s.
double MemcpyGbps(std::vector<std::byte>& dst, const std::vector<std::byte>& src, unsigned threads,
                  int runs) {
  const size_t n = src.size();
  const double s = MedianSeconds(runs, [&] {
    std::vector<std::thread> pool;
    const size_t part = (n / threads + 4095) / 4096 * 4096;
    for (unsigned i = 0; i < threads; ++i) {
      const size_t a = std::min(n, i * part);
      const size_t b = std::min(n, a + part);
      pool.emplace_back([&, a, b] { std::memcpy(dst.data() + a, src.data() + a, b - a); });
    }
    for (std::thread& t : pool) t.join();
  });
  return static_cast<double>(n) / s / 1e9;
}

struct HostDest {
  std::vector<std::vector<std::byte>> k, v;
  std::vector<void*> kb, vb;
  kdn_dest d;
  size_t bytes = 0;
  explicit HostDest(const kdn::ModelIdentity& m) {
    const size_t block = size_t{kTokens} * m.channels() * 2;
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      k.emplace_back(block, std::byte{1});  // touched now, not during the timing
      v.emplace_back(block, std::byte{1});
      kb.push_back(k.back().data());
      vb.push_back(v.back().data());
      bytes += 2 * block;
    }
    Check(kdn_dest_contiguous(&d, KDN_F16, m.n_layers, kb.data(), vb.data(), m.n_kv_heads,
                              m.head_dim, kTokens),
          "kdn_dest_contiguous");
  }
};

// Seconds to load every layer of `path` into `d` through a context of `device`.
double LoadSeconds(int device, const std::string& path, const kdn::ModelIdentity& m,
                   const kdn_dest& d, int runs, void* stream) {
  kdn_ctx* ctx = nullptr;
  Check(kdn_ctx_create(device, &ctx), "kdn_ctx_create");
  kdn_cache* c = nullptr;
  Check(kdn_open(ctx, path.c_str(), &c), "kdn_open");
  const double s = MedianSeconds(runs, [&] {
    Check(kdn_load(c, 0, m.n_layers, &d, 0, stream), "kdn_load");
    Check(kdn_sync(c), "kdn_sync");
  });
  kdn_close(c);
  kdn_ctx_destroy(ctx);
  return s;
}

void BenchCpu(const std::string& dir, const kdn::ModelIdentity& m, int runs) {
  HostDest dest(m);
  std::vector<std::byte> a(dest.bytes, std::byte{2});
  std::vector<std::byte> b(dest.bytes, std::byte{3});
  const unsigned all = std::max(1u, std::thread::hardware_concurrency());
  const char* env = std::getenv("KDN_CPU_THREADS");
  const unsigned workers =
      env != nullptr && std::atoi(env) > 0 ? static_cast<unsigned>(std::atoi(env)) : all;
  const double memcpy1 = MemcpyGbps(b, a, 1, runs);
  const double memcpy_all = MemcpyGbps(b, a, workers, runs);
  Print("engine_cpu_workers", workers);
  Print("engine_cpu_output_mib", static_cast<double>(dest.bytes) / (1 << 20));
  Print("engine_memcpy_1thread_gbps", memcpy1);
  Print("engine_memcpy_all_gbps", memcpy_all);
  for (const char* codec : kCodecs) {
    const std::string path = CacheFile(dir, m, codec);
    std::string name = codec;
    ::setenv("KDN_CPU_THREADS", "1", 1);
    const double one =
        static_cast<double>(dest.bytes) / LoadSeconds(-1, path, m, dest.d, runs, nullptr) / 1e9;
    if (env != nullptr) {
      ::setenv("KDN_CPU_THREADS", env, 1);
    } else {
      ::unsetenv("KDN_CPU_THREADS");
    }
    const double many =
        static_cast<double>(dest.bytes) / LoadSeconds(-1, path, m, dest.d, runs, nullptr) / 1e9;
    Print("engine_cpu_" + name + "_1worker_gbps", one);
    Print("engine_cpu_" + name + "_1worker_vs_memcpy", one / memcpy1);
    Print("engine_cpu_" + name + "_all_gbps", many);
    Print("engine_cpu_" + name + "_all_vs_memcpy_all", many / memcpy_all);
    Print("engine_cpu_" + name + "_per_core_gbps", many / workers);
    Print("engine_cpu_" + name + "_per_core_vs_memcpy", many / workers / memcpy1);
  }
}

// Bytes this process has read through read(2)/pread(2), as the kernel counts them.
uint64_t BytesRead() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "rchar:") return value;
  }
  Die("no rchar in /proc/self/io");
}

uint64_t FileBytes(const std::string& path) {
  kdn::Result<std::unique_ptr<kdn::KvReader>> r = kdn::KvReader::Open(path);
  if (!r.ok()) Die(r.status().ToString());
  return (*r)->header().file_bytes;
}

// BenchParallel for one file: `full` and `rank` are the destinations of a whole load and of rank 0
// of 8 (heads [head_begin, head_end)).
void BenchParallelFile(const std::string& dir, const kdn::ModelIdentity& m, const char* codec,
                       uint32_t groups, int runs, HostDest& full, const kdn_dest& rank,
                       uint32_t head_begin, uint32_t head_end) {
  constexpr uint32_t kPp = 4;
  const uint32_t stage_layers = m.n_layers / kPp;
  const std::string path = CacheFile(dir, m, codec, groups);
  kdn_ctx* ctx = nullptr;
  Check(kdn_ctx_create(-1, &ctx), "kdn_ctx_create");
  kdn_cache* c = nullptr;
  Check(kdn_open(ctx, path.c_str(), &c), "kdn_open");
  // Bytes and median seconds of `load` (one call, then kdn_sync).
  auto measure = [&](const std::function<kdn_status()>& load, uint64_t* bytes) {
    const uint64_t before = BytesRead();
    Check(load(), "load");
    Check(kdn_sync(c), "kdn_sync");
    *bytes = BytesRead() - before;
    return MedianSeconds(runs, [&] {
      Check(load(), "load");
      Check(kdn_sync(c), "kdn_sync");
    });
  };
  uint64_t full_bytes = 0, rank_bytes = 0, stage_bytes = 0;
  const double full_s =
      measure([&] { return kdn_load(c, 0, m.n_layers, &full.d, 0, nullptr); }, &full_bytes);
  const double rank_s = measure(
      [&] { return kdn_load_heads(c, 0, m.n_layers, head_begin, head_end, &rank, 0, nullptr); },
      &rank_bytes);
  const double stage_s =
      measure([&] { return kdn_load(c, 0, stage_layers, &full.d, 0, nullptr); }, &stage_bytes);
  kdn_close(c);
  kdn_ctx_destroy(ctx);
  const std::string name =
      std::string("engine_parallel_") + codec + (groups > 1 ? "_g" + std::to_string(groups) : "");
  if (groups > 1) {
    // What grouping costs: the file against the one-group file of the same values.
    const std::string one = CacheFile(dir, m, codec, 1);
    Print(name + "_file_bytes_vs_g1", static_cast<double>(FileBytes(path)) / FileBytes(one));
  }
  Print(name + "_full_mib_read", static_cast<double>(full_bytes) / (1 << 20));
  Print(name + "_tp8_rank_bytes_vs_full", static_cast<double>(rank_bytes) / full_bytes);
  Print(name + "_tp8_rank_time_vs_full", rank_s / full_s);
  Print(name + "_pp4_stage_bytes_vs_full", static_cast<double>(stage_bytes) / full_bytes);
  Print(name + "_pp4_stage_time_vs_full", stage_s / full_s);
}

// One parallel layout's load against the full load: its bytes read and time as ratios.
void BenchParallel(const std::string& dir, const kdn::ModelIdentity& m, int runs) {
  constexpr uint32_t kTp = 8;
  HostDest full(m);
  // Rank 0 of 8: its own cache of n_kv_heads / 8 heads.
  uint32_t head_begin = 0, head_end = 0;
  Check(kdn_tp_heads(m.n_kv_heads, 0, kTp, &head_begin, &head_end), "kdn_tp_heads");
  const uint32_t rank_heads = head_end - head_begin;
  const size_t rank_block = size_t{kTokens} * rank_heads * m.head_dim * 2;
  std::vector<std::vector<std::byte>> rk, rv;
  std::vector<void*> rkb, rvb;
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    rk.emplace_back(rank_block, std::byte{1});
    rv.emplace_back(rank_block, std::byte{1});
    rkb.push_back(rk.back().data());
    rvb.push_back(rv.back().data());
  }
  kdn_dest rank{};
  Check(kdn_dest_contiguous(&rank, KDN_F16, m.n_layers, rkb.data(), rvb.data(), rank_heads,
                            m.head_dim, kTokens),
        "kdn_dest_contiguous");
  // Each codec on a file of one head group (a rank reads every block whole) and on one of 8 head
  // groups (a rank reads its group's blocks only).
  for (const char* codec : {"raw", "lossless", "q4", "tc"}) {
    for (uint32_t groups : {1u, kTp}) {
      BenchParallelFile(dir, m, codec, groups, runs, full, rank, head_begin, head_end);
    }
  }
}

// Sliding-window layers: the same tensors as llama3-8b's, every layer given a window of 1/8 of
// the file, loaded against the file without windows (time and bytes read as ratios). A window
// layer's blocks are still read and checksummed whole; only its rows are decoded and written.
void BenchWindow(const std::string& dir, const kdn::ModelIdentity& m, int runs) {
  kdn::ModelIdentity windowed = m;
  windowed.layer_windows.assign(m.n_layers, kTokens / 8);
  HostDest dest(m);
  for (const char* codec : {"raw", "lossless", "q4"}) {
    const std::string full_path = CacheFile(dir, m, codec);
    const std::string window_path = CacheFile(dir, windowed, codec);
    auto bytes_of = [&](const std::string& path) {
      const uint64_t before = BytesRead();
      LoadSeconds(-1, path, m, dest.d, 1, nullptr);
      return static_cast<double>(BytesRead() - before);
    };
    const double full_bytes = bytes_of(full_path), window_bytes = bytes_of(window_path);
    const double full_s = LoadSeconds(-1, full_path, m, dest.d, runs, nullptr);
    const double window_s = LoadSeconds(-1, window_path, m, dest.d, runs, nullptr);
    const std::string name = std::string("engine_window8_") + codec;
    Print(name + "_time_vs_full", window_s / full_s);
    Print(name + "_bytes_vs_full", window_bytes / full_bytes);
  }
}

#if KDN_HAVE_CUDA
#define CUDA_CHECK(call)                                                            \
  do {                                                                              \
    const cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) Die(std::string(#call) + ": " + cudaGetErrorString(e_)); \
  } while (0)

double EventSeconds(cudaStream_t s, int runs, const std::function<void()>& enqueue) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  enqueue();
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    CUDA_CHECK(cudaEventRecord(a, s));
    enqueue();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / 1e3);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  return Median(t);
}

void BenchCuda(const std::string& dir, const kdn::ModelIdentity& m, int runs) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    std::fprintf(stderr, "# no CUDA device: CUDA figures skipped\n");
    return;
  }
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::fprintf(stderr, "# CUDA device 0: %s\n", prop.name);
  CUDA_CHECK(cudaSetDevice(0));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const size_t block = size_t{kTokens} * m.channels() * 2;
  const size_t out_bytes = 2 * block * m.n_layers;
  void* dev = nullptr;
  void* dev2 = nullptr;
  CUDA_CHECK(cudaMalloc(&dev, out_bytes));
  CUDA_CHECK(cudaMalloc(&dev2, out_bytes));
  CUDA_CHECK(cudaMemset(dev, 1, out_bytes));
  CUDA_CHECK(cudaMemset(dev2, 2, out_bytes));
  const double d2d = static_cast<double>(out_bytes) /
                     EventSeconds(stream, runs,
                                  [&] {
                                    CUDA_CHECK(cudaMemcpyAsync(dev2, dev, out_bytes,
                                                               cudaMemcpyDeviceToDevice, stream));
                                  }) /
                     1e9;
  Print("engine_cuda_d2d_memcpy_gbps", d2d);
  std::vector<void*> kb, vb;
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    kb.push_back(static_cast<char*>(dev) + 2 * l * block);
    vb.push_back(static_cast<char*>(dev) + (2 * l + 1) * block);
  }
  kdn_dest d;
  Check(kdn_dest_contiguous(&d, KDN_F16, m.n_layers, kb.data(), vb.data(), m.n_kv_heads, m.head_dim,
                            kTokens),
        "kdn_dest_contiguous");
  std::vector<char> host;
  for (const char* codec : kCodecs) {
    const std::string path = CacheFile(dir, m, codec);
    const std::string name = codec;
    // Kernels alone: layer 0's payloads on the device, decoded into every layer.
    kdn::Result<std::unique_ptr<kdn::KvReader>> reader = kdn::KvReader::Open(path);
    if (!reader.ok()) Die(reader.status().ToString());
    const kdn::KvHeader& h = (*reader)->header();
    const kdn::BlockShape shape{h.n_tokens, h.model.channels(), h.model.dtype};
    std::vector<std::byte> enc[2];
    std::optional<kdn::PreparedBlock> prepared[2];
    void* payload[2] = {nullptr, nullptr};
    for (int kv = 0; kv < 2; ++kv) {
      const auto kind = static_cast<kdn::KvKind>(kv);
      enc[kv].resize(h.block(0, kind).encoded_bytes);
      if (!(*reader)->ReadBlock(0, kind, enc[kv]).ok()) Die("ReadBlock");
      kdn::Result<kdn::PreparedBlock> p =
          kdn::PreparedBlock::Prepare(h.codec, kind, shape, enc[kv]);
      if (!p.ok()) Die(p.status().ToString());
      prepared[kv].emplace(std::move(*p));
      CUDA_CHECK(cudaMalloc(&payload[kv], prepared[kv]->payload().size()));
      CUDA_CHECK(cudaMemcpy(payload[kv], prepared[kv]->payload().data(),
                            prepared[kv]->payload().size(), cudaMemcpyHostToDevice));
    }
    kdn::libkdn::DecodeArgs args;
    args.codec = static_cast<uint32_t>(h.codec.id);
    args.bits = h.codec.bits;
    args.group_size = h.codec.group_size;
    args.model_dtype = static_cast<uint32_t>(h.model.dtype);
    args.out_dtype = 1;
    args.tokens = h.n_tokens;
    args.channels = h.model.channels();
    args.addr.block_stride = h.model.channels();
    args.addr.token_stride = h.model.channels();
    args.addr.head_stride = h.model.head_dim;
    args.addr.block_size = 1;
    args.addr.head_dim = h.model.head_dim;
    const double kernel_s = EventSeconds(stream, runs, [&] {
      for (uint32_t l = 0; l < m.n_layers; ++l) {
        for (int kv = 0; kv < 2; ++kv) {
          args.block[kv].payload = static_cast<const uint8_t*>(payload[kv]);
          args.block[kv].out = kv == 0 ? kb[l] : vb[l];
          args.block[kv].codes_offset = static_cast<uint32_t>(prepared[kv]->codes_offset());
        }
        if (!kdn::libkdn::LaunchDecode(args, stream).ok()) Die("LaunchDecode");
      }
    });
    const double kernel = static_cast<double>(out_bytes) / kernel_s / 1e9;
    Print("engine_cuda_" + name + "_kernel_gbps", kernel);
    Print("engine_cuda_" + name + "_kernel_vs_d2d", kernel / d2d);
    for (void* p : payload) CUDA_CHECK(cudaFree(p));

    // File -> device: kdn_load against pread + cudaMemcpy of the file's bytes (page cache warm).
    const double load_s = LoadSeconds(0, path, m, d, runs, stream);
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) Die("open " + path);
    const off_t file_bytes = ::lseek(fd, 0, SEEK_END);
    host.resize(static_cast<size_t>(file_bytes));
    const double base_s = MedianSeconds(runs, [&] {
      constexpr size_t kChunk = 8u << 20;
      for (off_t off = 0; off < file_bytes; off += static_cast<off_t>(kChunk)) {
        const size_t n_read = static_cast<size_t>(std::min<off_t>(kChunk, file_bytes - off));
        if (::pread(fd, host.data() + off, n_read, off) != static_cast<ssize_t>(n_read))
          Die("pread");
        CUDA_CHECK(cudaMemcpy(static_cast<char*>(dev2) + off % out_bytes, host.data() + off,
                              std::min<size_t>(n_read, out_bytes - off % out_bytes),
                              cudaMemcpyHostToDevice));
      }
    });
    ::close(fd);
    Print("engine_cuda_" + name + "_file_to_device_output_gbps",
          static_cast<double>(out_bytes) / load_s / 1e9);
    Print("engine_cuda_" + name + "_file_to_device_file_gbps",
          static_cast<double>(file_bytes) / load_s / 1e9);
    Print("engine_cuda_" + name + "_pread_memcpy_file_gbps",
          static_cast<double>(file_bytes) / base_s / 1e9);
    Print("engine_cuda_" + name + "_file_to_device_vs_pread_memcpy", base_s / load_s);
  }
  CUDA_CHECK(cudaFree(dev));
  CUDA_CHECK(cudaFree(dev2));
  CUDA_CHECK(cudaStreamDestroy(stream));
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: kdn_bench_libkdn DIR RUNS\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int runs = std::max(1, std::atoi(argv[2]));
  kdn::Result<kdn::ModelIdentity> m = kdn::ModelPreset("llama3-8b");
  if (!m.ok()) Die(m.status().ToString());
  BenchCpu(dir, *m, runs);
  BenchParallel(dir, *m, runs);
  BenchWindow(dir, *m, runs);
#if KDN_HAVE_CUDA
  BenchCuda(dir, *m, runs);
#else
  std::fprintf(stderr, "# libkdn built without CUDA: CUDA figures skipped\n");
#endif
  return 0;
}
