// Row kernels over destination rows: grid-stride loops whose consecutive threads touch
// consecutive channels (or pairs), so accesses within a head are coalesced. The arithmetic is the
// KDN_HD code the CPU backend runs.
#ifndef KDN_LIBKDN_CUDA_ROW_KERNELS_CUH_
#define KDN_LIBKDN_CUDA_ROW_KERNELS_CUH_

#include <stdint.h>

#include "libkdn/cuda/row_launch.h"
#include "libkdn/dest_addressing.h"
#include "libkdn/deviation.h"
#include "libkdn/element_io.h"
#include "libkdn/rope_math.h"

namespace kdn::libkdn {

inline constexpr int kRowThreads = 256;

__device__ __forceinline__ uint64_t GlobalThread() {
  return static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ uint64_t GridThreads() {
  return static_cast<uint64_t>(gridDim.x) * blockDim.x;
}

// One thread per (token, head, rotated pair).
__global__ void __launch_bounds__(kRowThreads) RopeKernel(const __grid_constant__ RopeArgs a) {
  const uint32_t pairs = a.rotary_dim / 2;
  const uint64_t total = static_cast<uint64_t>(a.n_tokens) * a.n_heads * pairs;
  for (uint64_t i = GlobalThread(); i < total; i += GridThreads()) {
    const uint32_t pair = static_cast<uint32_t>(i % pairs);
    const uint32_t head = static_cast<uint32_t>(i / pairs % a.n_heads);
    const uint32_t t = a.token_begin + static_cast<uint32_t>(i / pairs / a.n_heads);
    const int64_t row = DestRowOffset(a.addr, t);
    if (row < 0) continue;
    const int64_t h = row + static_cast<int64_t>(head) * a.addr.head_stride;
    uint32_t da;
    uint32_t db;
    RopePairDims(a.style, a.rotary_dim, pair, &da, &db);
    const float x = LoadElem(a.base, h + da, a.dtype);
    const float y = LoadElem(a.base, h + db, a.dtype);
    float xo;
    float yo;
    RotatePair(x, y, a.cos[pair], a.sin[pair], &xo, &yo);
    StoreElem(a.base, h + da, a.dtype, xo);
    StoreElem(a.base, h + db, a.dtype, yo);
  }
}

// One warp per token; the lanes stride over channels and combine with shuffles.
__global__ void __launch_bounds__(kRowThreads)
    DeviationKernel(const void* fresh, const void* base, const DestAddressing addr, uint32_t dtype,
                    uint32_t channels, uint32_t token_begin, uint32_t n, float* out) {
  const uint64_t warp = GlobalThread() / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (warp >= n) return;  // whole warps leave together
  const uint32_t i = static_cast<uint32_t>(warp);
  const int64_t row = DestRowOffset(addr, token_begin + i);
  double acc = 0.0;
  if (row >= 0) {
    for (uint32_t c = lane; c < channels; c += 32) {
      const float f = LoadElem(fresh, static_cast<int64_t>(i) * channels + c, dtype);
      const float v = LoadElem(base, row + DestChannelOffset(addr, c), dtype);
      acc = __dadd_rn(acc, DeviationTerm(f, v));
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    acc = __dadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, offset));
  }
  if (lane == 0) out[i] = static_cast<float>(acc);
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    ScatterKernel(const T* rows, const uint32_t* tokens, uint32_t n, T* base,
                  const DestAddressing addr, uint32_t channels) {
  const uint64_t total = static_cast<uint64_t>(n) * channels;
  for (uint64_t e = GlobalThread(); e < total; e += GridThreads()) {
    const uint32_t i = static_cast<uint32_t>(e / channels);
    const uint32_t c = static_cast<uint32_t>(e % channels);
    const int64_t row = DestRowOffset(addr, tokens[i]);
    if (row >= 0) base[row + DestChannelOffset(addr, c)] = rows[e];
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    GatherKernel(const T* base, const DestAddressing addr, uint32_t channels, uint32_t n, T* out) {
  const uint64_t total = static_cast<uint64_t>(n) * channels;
  for (uint64_t e = GlobalThread(); e < total; e += GridThreads()) {
    const uint32_t t = static_cast<uint32_t>(e / channels);
    const uint32_t c = static_cast<uint32_t>(e % channels);
    const int64_t row = DestRowOffset(addr, t);
    out[e] = row >= 0 ? base[row + DestChannelOffset(addr, c)] : T(0);
  }
}

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_ROW_KERNELS_CUH_
