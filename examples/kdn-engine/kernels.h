// The engine's arithmetic: matrix products, dot products, RMSNorm.
//
// Determinism is the contract here: each output element is computed by one fixed sequence of
// operations that depends only on its own inputs, never on how many tokens are in the batch, how
// rows are tiled, or how many threads run. That is what makes "load the cached KV of a document,
// then prefill the question" bit-identical to "prefill document + question from scratch".
//
// The instruction set (AVX2+FMA, or portable C++) is picked once at start-up from what the CPU
// supports; KDN_ENGINE_ISA=portable|avx2 overrides it. Different instruction sets round
// differently, so results are reproducible per instruction set, not across them. (An AVX-512
// version of the same tiles measured slower than AVX2 on this machine's EPYC, so there is none.)
#ifndef KDN_EXAMPLES_KDN_ENGINE_KERNELS_H_
#define KDN_EXAMPLES_KDN_ENGINE_KERNELS_H_

#include <cstddef>
#include <string_view>

#include "kdn-engine/thread_pool.h"

namespace kdn::engine {

enum class Isa { kPortable, kAvx2 };

Isa ActiveIsa();
std::string_view IsaName(Isa isa);
// Switches the instruction set (tests use it to cover every path); false when the CPU lacks it.
bool SetIsa(Isa isa);

// y[t][o] = sum_i w[o][i] * x[t][i] for t < n, o < out. x is [n][in], w is [out][in] (the
// llama2.c layout), y is [n][out]; rows are contiguous. Parallel over output rows.
void MatMul(ThreadPool& pool, const float* x, size_t n, size_t in, const float* w, size_t out,
            float* y);

// sum_i a[i] * b[i], in the active instruction set's fixed order.
float Dot(const float* a, const float* b, size_t n);

// y[i] += a * x[i] (fused on AVX2).
void Axpy(float* y, float a, const float* x, size_t n);

// out[j] = Dot(q, k + j * stride, n) for j < n_keys: the same bits as Dot, several keys at once.
void DotMany(const float* q, const float* k, size_t stride, size_t n_keys, size_t n, float* out);

// Axpy(y, p[j], v + j * stride, n) for j = 0, 1, ... n_keys - 1 in order: the same bits.
void AxpyMany(float* y, const float* p, const float* v, size_t stride, size_t n_keys, size_t n);

// out = x / sqrt(mean(x^2) + eps) * weight, for one row of n values (out may alias x).
void RmsNorm(float* out, const float* x, const float* weight, size_t n, float eps);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_KERNELS_H_
