// kdn_fs_bench: the parts of the `fs` benchmark group a shell script cannot do.
//
//   kdn_fs_bench make-kv PATH BYTES        a synthetic raw `.kv` of about BYTES (llama3-8b shape)
//   kdn_fs_bench make-files DIR N BYTES    N files f0..f(N-1) of BYTES random bytes each
//   kdn_fs_bench open-read-pair DIR BASE N RUNS  open + read 4 KiB + close of f0..f(N-1) in DIR
//                                          and in BASE, in turns: RUNS timed passes of each
//                                          after one warm-up pass; prints the median
//                                          microseconds per file of each and the median of the
//                                          per-run ratios
//   kdn_fs_bench kdn-load PATH             libkdn (CPU backend) opens the `.kv` and loads every
//                                          layer into host memory in the model's dtype, as an
//                                          engine would (its destination allocated beforehand, as an
//                                          engine's KV memory is); prints file bytes per second
//   kdn_fs_bench create-files DIR N BYTES  creates f0..f(N-1) in DIR (O_CREAT|O_EXCL), each with
//                                          BYTES bytes written in one write(2) (none for 0), and
//                                          closes each; prints the seconds it took
//   kdn_fs_bench stat-files DIR N          lstat(2) of f0..f(N-1); prints the seconds
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kdn/format.h"
#include "kdn/kdn.h"
#include "kdn/synthetic.h"
#include "tests/bench/bench_timing.h"

namespace {

using kdn::bench::Median;

int Fail(const std::string& what) {
  std::fprintf(stderr, "kdn_fs_bench: %s\n", what.c_str());
  return 1;
}

bool WriteAll(const std::string& path, const void* data, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, p + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  return ::close(fd) == 0 && done == size;
}

int MakeKv(const std::string& path, uint64_t bytes) {
  auto model = kdn::ModelPreset("llama3-8b");
  auto codec = kdn::CodecSpec::Parse("raw");
  if (!model.ok() || !codec.ok()) return Fail("no llama3-8b preset");
  uint64_t per_token =
      uint64_t{2} * model->n_layers * model->channels() * kdn::DTypeSize(model->dtype);
  uint32_t tokens = static_cast<uint32_t>(std::max<uint64_t>(1, bytes / per_token));
  auto file = kdn::SynthesizeKvFile(*model, tokens, *codec, 42);
  if (!file.ok()) return Fail(file.status().ToString());
  if (!WriteAll(path, file->data(), file->size())) return Fail("cannot write " + path);
  std::fprintf(stderr, "kdn_fs_bench: %s: %u tokens, %zu bytes\n", path.c_str(), tokens,
               file->size());
  return 0;
}

int MakeFiles(const std::string& dir, int n, size_t bytes) {
  std::mt19937_64 rng(7);
  std::vector<uint64_t> buf((bytes + 7) / 8);
  for (int i = 0; i < n; ++i) {
    for (auto& w : buf) w = rng();
    if (!WriteAll(dir + "/f" + std::to_string(i), buf.data(), bytes)) {
      return Fail("cannot write " + dir + "/f" + std::to_string(i));
    }
  }
  return 0;
}

// One pass of open + read 4 KiB + close over `paths`: microseconds per file, or < 0 (said why).
double OpenReadPass(const std::vector<std::string>& paths) {
  alignas(4096) static char buf[4096];
  auto start = std::chrono::steady_clock::now();
  for (const auto& p : paths) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    const char* failed = nullptr;
    if (fd < 0) {
      failed = "open";
    } else if (::read(fd, buf, sizeof(buf)) < 0) {
      failed = "read";
      ::close(fd);
    } else if (::close(fd) != 0) {
      failed = "close";
    }
    if (failed != nullptr) {
      Fail(std::string(failed) + " " + p + ": " + std::strerror(errno));
      return -1;
    }
  }
  double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  return us / static_cast<double>(paths.size());
}

std::vector<std::string> FileNames(const std::string& dir, int n) {
  std::vector<std::string> paths;
  for (int i = 0; i < n; ++i) paths.push_back(dir + "/f" + std::to_string(i));
  return paths;
}

// open + read 4 KiB + close of N files in `dir` and in `base`, in turns, one pass of each per run
// after a warm-up pass of each: on a machine whose speed drifts (a VM beside other jobs), each
// ratio compares passes made a moment apart. Prints the median microseconds per file of each and
// the median of the per-run ratios.
int OpenReadPair(const std::string& dir, const std::string& base, int n, int runs) {
  const auto paths = FileNames(dir, n);
  const auto base_paths = FileNames(base, n);
  std::vector<double> us, base_us, ratios;
  for (int run = -1; run < runs; ++run) {  // run -1 warms the caches
    double a = OpenReadPass(paths);
    if (a < 0) return 1;
    double b = OpenReadPass(base_paths);
    if (b < 0) return 1;
    if (run < 0) continue;
    us.push_back(a);
    base_us.push_back(b);
    ratios.push_back(a / b);
  }
  std::printf("%.3f %.3f %.3f\n", Median(us), Median(base_us), Median(ratios));
  return 0;
}

int KdnLoad(const std::string& path) {
  kdn_ctx* ctx = nullptr;
  if (kdn_ctx_create(-1, &ctx) != KDN_OK) return Fail(kdn_last_error());
  // An engine's KV memory exists before it loads anything: the destination is allocated and
  // touched (faulted in) before the clock starts, from the file's shape read first.
  std::vector<std::vector<std::byte>> k, v;
  std::vector<void*> kb, vb;
  {
    kdn_cache* probe = nullptr;
    kdn_cache_info pi;
    if (kdn_open(ctx, path.c_str(), &probe) != KDN_OK || kdn_info(probe, &pi) != KDN_OK) {
      return Fail(kdn_last_error());
    }
    const size_t pe = pi.model.dtype == KDN_F32 ? 4 : 2;
    const size_t pl = size_t{pi.n_tokens} * pi.model.n_kv_heads * pi.model.head_dim * pe;
    k.resize(pi.model.n_layers);
    v.resize(pi.model.n_layers);
    for (uint32_t l = 0; l < pi.model.n_layers; ++l) {
      k[l].resize(pl);
      v[l].resize(pl);
      kb.push_back(k[l].data());
      vb.push_back(v[l].data());
    }
    kdn_close(probe);
  }
  auto start = std::chrono::steady_clock::now();
  kdn_cache* cache = nullptr;
  if (kdn_open(ctx, path.c_str(), &cache) != KDN_OK) return Fail(kdn_last_error());
  kdn_cache_info info;
  if (kdn_info(cache, &info) != KDN_OK) return Fail(kdn_last_error());
  const uint32_t layers = info.model.n_layers;
  if (kb.size() != layers) return Fail("the file changed between two opens");
  kdn_dest dest;
  if (kdn_dest_contiguous(&dest, info.model.dtype, layers, kb.data(), vb.data(),
                          info.model.n_kv_heads, info.model.head_dim, info.n_tokens) != KDN_OK ||
      kdn_load(cache, 0, layers, &dest, 0, nullptr) != KDN_OK || kdn_sync(cache) != KDN_OK) {
    return Fail(kdn_last_error());
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%.0f\n", static_cast<double>(info.file_bytes) / s);
  kdn_close(cache);
  kdn_ctx_destroy(ctx);
  return 0;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The names are made before the clock starts: only the system calls are timed.
std::vector<std::string> Names(const std::string& dir, int n) {
  std::vector<std::string> paths;
  paths.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) paths.push_back(dir + "/f" + std::to_string(i));
  return paths;
}

int CreateFiles(const std::string& dir, int n, size_t bytes) {
  std::vector<std::string> paths = Names(dir, n);
  std::vector<char> content(bytes, 'k');
  auto start = std::chrono::steady_clock::now();
  for (const auto& p : paths) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return Fail("create " + p + ": " + std::strerror(errno));
    if (bytes > 0 && ::write(fd, content.data(), bytes) != static_cast<ssize_t>(bytes)) {
      return Fail("write " + p + ": " + std::strerror(errno));
    }
    if (::close(fd) != 0) return Fail("close " + p + ": " + std::strerror(errno));
  }
  std::printf("%.6f\n", SecondsSince(start));
  return 0;
}

int StatFiles(const std::string& dir, int n) {
  std::vector<std::string> paths = Names(dir, n);
  auto start = std::chrono::steady_clock::now();
  for (const auto& p : paths) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) return Fail("stat " + p + ": " + std::strerror(errno));
  }
  std::printf("%.6f\n", SecondsSince(start));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "make-kv" && argc == 4) return MakeKv(argv[2], std::strtoull(argv[3], nullptr, 10));
  if (cmd == "make-files" && argc == 5) {
    return MakeFiles(argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10));
  }
  if (cmd == "open-read-pair" && argc == 6) {
    int runs = std::max(1, std::atoi(argv[5]));
    return OpenReadPair(argv[2], argv[3], std::atoi(argv[4]), runs);
  }
  if (cmd == "kdn-load" && argc == 3) return KdnLoad(argv[2]);
  if (cmd == "create-files" && argc == 5) {
    return CreateFiles(argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10));
  }
  if (cmd == "stat-files" && argc == 4) return StatFiles(argv[2], std::atoi(argv[3]));
  std::fprintf(stderr,
               "usage: kdn_fs_bench make-kv PATH BYTES | make-files DIR N BYTES | "
               "open-read-pair DIR BASE N RUNS | kdn-load PATH | create-files DIR N BYTES | "
               "stat-files DIR N\n");
  return 2;
}
