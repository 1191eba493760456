#include "kdn-engine/kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

namespace kdn::engine {

namespace {

// Tokens whose activations one pass over a weight block reuses; keeps them in L2.
constexpr size_t kTokenTile = 48;
// Below this many multiply-adds a product runs on the calling thread: waking workers costs more.
constexpr size_t kParallelThreshold = size_t{1} << 16;

// --- portable: 8 partial sums per element, reduced in a fixed tree -------------------------------

float Reduce8(const float* a) {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

float DotPortable(const float* a, const float* b, size_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float s = Reduce8(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void AxpyPortable(float* y, float a, const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void RowsPortable(const float* x, size_t n, size_t in, const float* w, size_t o0, size_t o1,
                  float* y, size_t ldy) {
  for (size_t t0 = 0; t0 < n; t0 += kTokenTile) {
    const size_t t1 = std::min(n, t0 + kTokenTile);
    for (size_t o = o0; o < o1; ++o) {
      for (size_t t = t0; t < t1; ++t) y[t * ldy + o] = DotPortable(w + o * in, x + t * in, in);
    }
  }
}

// --- AVX2 + FMA: one 8-lane accumulator per element; R weight rows x T tokens per tile ----------

__attribute__((target("avx2,fma"))) inline float Hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// Rows r of w (stride ldw) times rows t of x (stride ldx), n values each, into y[t * ldy + r].
template <int R, int T>
__attribute__((target("avx2,fma"))) inline void Tile256(const float* w, size_t ldw, const float* x,
                                                        size_t ldx, size_t n, float* y,
                                                        size_t ldy) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(x + t * ldx + i);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_loadu_ps(w + r * ldw + i);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float s = Hsum256(acc[r][t]);
      for (size_t j = i; j < n; ++j) s += w[r * ldw + j] * x[t * ldx + j];
      y[t * ldy + r] = s;
    }
  }
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, size_t n) {
  float s;
  Tile256<1, 1>(a, n, b, n, n, &s, 1);
  return s;
}

// Four keys at a time: four independent accumulator chains instead of one, same bits per key.
__attribute__((target("avx2,fma"))) void DotManyAvx2(const float* q, const float* k, size_t stride,
                                                     size_t n_keys, size_t n, float* out) {
  size_t j = 0;
  for (; j + 4 <= n_keys; j += 4) Tile256<1, 4>(q, n, k + j * stride, stride, n, out + j, 1);
  for (; j < n_keys; ++j) Tile256<1, 1>(q, n, k + j * stride, stride, n, out + j, 1);
}

// y += p[j] * v_j for j in order, eight vectors of y held in registers across the keys.
template <int V>
__attribute__((target("avx2,fma"))) inline void AxpyColumns(float* y, const float* p,
                                                            const float* v, size_t stride,
                                                            size_t n_keys) {
  __m256 acc[V];
  for (int i = 0; i < V; ++i) acc[i] = _mm256_loadu_ps(y + 8 * i);
  for (size_t j = 0; j < n_keys; ++j) {
    const __m256 pj = _mm256_set1_ps(p[j]);
    for (int i = 0; i < V; ++i) {
      acc[i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + j * stride + 8 * i), acc[i]);
    }
  }
  for (int i = 0; i < V; ++i) _mm256_storeu_ps(y + 8 * i, acc[i]);
}

__attribute__((target("avx2,fma"))) void AxpyManyAvx2(float* y, const float* p, const float* v,
                                                      size_t stride, size_t n_keys, size_t n) {
  size_t d = 0;
  for (; d + 64 <= n; d += 64) AxpyColumns<8>(y + d, p, v + d, stride, n_keys);
  for (; d + 8 <= n; d += 8) AxpyColumns<1>(y + d, p, v + d, stride, n_keys);
  for (; d < n; ++d) {
    for (size_t j = 0; j < n_keys; ++j) y[d] = std::fma(p[j], v[j * stride + d], y[d]);
  }
}

__attribute__((target("avx2,fma"))) void AxpyAvx2(float* y, float a, const float* x, size_t n) {
  const __m256 av = _mm256_set1_ps(a);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

template <int R, int T>
__attribute__((target("avx2,fma"))) void TokenRun256(const float* x, size_t t0, size_t t1,
                                                     size_t in, const float* w, float* y,
                                                     size_t ldy) {
  size_t t = t0;
  for (; t + T <= t1; t += T) Tile256<R, T>(w, in, x + t * in, in, in, y + t * ldy, ldy);
  for (; t < t1; ++t) Tile256<R, 1>(w, in, x + t * in, in, in, y + t * ldy, ldy);
}

__attribute__((target("avx2,fma"))) void RowsAvx2(const float* x, size_t n, size_t in,
                                                  const float* w, size_t o0, size_t o1, float* y,
                                                  size_t ldy) {
  for (size_t t0 = 0; t0 < n; t0 += kTokenTile) {
    const size_t t1 = std::min(n, t0 + kTokenTile);
    size_t o = o0;
    for (; o + 4 <= o1; o += 4) TokenRun256<4, 3>(x, t0, t1, in, w + o * in, y + o, ldy);
    for (; o < o1; ++o) TokenRun256<1, 3>(x, t0, t1, in, w + o * in, y + o, ldy);
  }
}

// --- dispatch -----------------------------------------------------------------------------------

using RowsFn = void (*)(const float*, size_t, size_t, const float*, size_t, size_t, float*, size_t);
using DotFn = float (*)(const float*, const float*, size_t);

bool Supported(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return false;
}

Isa InitialIsa() {
  if (const char* env = std::getenv("KDN_ENGINE_ISA"); env != nullptr) {
    const std::string want(env);
    for (Isa isa : {Isa::kPortable, Isa::kAvx2}) {
      if (want == IsaName(isa) && Supported(isa)) return isa;
    }
  }
  if (Supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kPortable;
}

Isa g_isa = InitialIsa();

RowsFn Rows() {
  switch (g_isa) {
    case Isa::kAvx2:
      return RowsAvx2;
    case Isa::kPortable:
      break;
  }
  return RowsPortable;
}

}  // namespace

Isa ActiveIsa() {
  return g_isa;
}

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
  }
  return "?";
}

bool SetIsa(Isa isa) {
  if (!Supported(isa)) return false;
  g_isa = isa;
  return true;
}

void MatMul(ThreadPool& pool, const float* x, size_t n, size_t in, const float* w, size_t out,
            float* y) {
  const RowsFn rows = Rows();
  if (n * in * out < kParallelThreshold) {
    rows(x, n, in, w, 0, out, y, out);
    return;
  }
  // Grain 4 keeps the 4-row tiles whole (speed only: no result depends on the tiling).
  pool.ParallelFor(
      out, [&](size_t o0, size_t o1) { rows(x, n, in, w, o0, o1, y, out); }, 4);
}

float Dot(const float* a, const float* b, size_t n) {
  switch (g_isa) {
    case Isa::kAvx2:
      return DotAvx2(a, b, n);
    case Isa::kPortable:
      break;
  }
  return DotPortable(a, b, n);
}

void Axpy(float* y, float a, const float* x, size_t n) {
  if (g_isa == Isa::kAvx2) {
    AxpyAvx2(y, a, x, n);
  } else {
    AxpyPortable(y, a, x, n);
  }
}

void DotMany(const float* q, const float* k, size_t stride, size_t n_keys, size_t n, float* out) {
  if (g_isa == Isa::kAvx2) {
    DotManyAvx2(q, k, stride, n_keys, n, out);
  } else {
    for (size_t j = 0; j < n_keys; ++j) out[j] = DotPortable(q, k + j * stride, n);
  }
}

void AxpyMany(float* y, const float* p, const float* v, size_t stride, size_t n_keys, size_t n) {
  if (g_isa == Isa::kAvx2) {
    AxpyManyAvx2(y, p, v, stride, n_keys, n);
  } else {
    for (size_t j = 0; j < n_keys; ++j) AxpyPortable(y, p[j], v + j * stride, n);
  }
}

void RmsNorm(float* out, const float* x, const float* weight, size_t n, float eps) {
  const float ms = Dot(x, x, n) / static_cast<float>(n) + eps;
  const float scale = 1.0f / std::sqrt(ms);
  for (size_t i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

}  // namespace kdn::engine
