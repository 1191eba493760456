// Host side of the row kernels: RoPE re-rotation, deviation, scatter and gather of destination
// rows on the device.
#ifndef KDN_LIBKDN_CUDA_ROW_LAUNCH_H_
#define KDN_LIBKDN_CUDA_ROW_LAUNCH_H_

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "libkdn/dest_addressing.h"
#include "libkdn/rope_math.h"
#include "kdn/status.h"

namespace kdn::libkdn {

// Tokens [token_begin, +n_tokens) of one layer's keys at `base`, rotated in place.
struct RopeArgs {
  void* base = nullptr;
  DestAddressing addr;  // device tables
  uint32_t dtype = 1;   // ElemType
  uint32_t token_begin = 0;
  uint32_t n_tokens = 0;
  uint32_t n_heads = 0;
  uint32_t style = 0;
  uint32_t rotary_dim = 0;
  float cos[kMaxRopePairs];
  float sin[kMaxRopePairs];
};
Status LaunchRope(const RopeArgs& args, cudaStream_t stream);

// out[i] = deviation of fresh row i against destination token token_begin + i.
Status LaunchDeviation(const void* fresh, const void* base, const DestAddressing& addr,
                       uint32_t dtype, uint32_t channels, uint32_t token_begin, uint32_t n,
                       float* out, cudaStream_t stream);

// Row i of `rows` to destination token tokens[i] (tokens in device memory).
Status LaunchScatter(const void* rows, const uint32_t* tokens, uint32_t n, void* base,
                     const DestAddressing& addr, uint32_t dtype, uint32_t channels,
                     cudaStream_t stream);

// Destination tokens [0, n) to rows of `out` (zeros for a skipped slot).
Status LaunchGather(const void* base, const DestAddressing& addr, uint32_t dtype, uint32_t channels,
                    uint32_t n, void* out, cudaStream_t stream);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_ROW_LAUNCH_H_
