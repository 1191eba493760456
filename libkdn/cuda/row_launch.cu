// Launch configuration of the row kernels.
#include <algorithm>

#include "libkdn/cuda/cuda_util.h"
#include "libkdn/cuda/row_kernels.cuh"
#include "libkdn/cuda/row_launch.h"

namespace kdn::libkdn {
namespace {

// Grid-stride loops: enough blocks to fill the device, not one per element.
unsigned GridFor(uint64_t work) {
  const uint64_t blocks = (work + kRowThreads - 1) / kRowThreads;
  return static_cast<unsigned>(std::clamp<uint64_t>(blocks, 1, 65535));
}

}  // namespace

Status LaunchRope(const RopeArgs& args, cudaStream_t stream) {
  if (args.n_tokens == 0 || args.rotary_dim < 2 || args.style == kRopeNone) return Status::OK();
  if (args.rotary_dim / 2 > kMaxRopePairs)
    return Status::Internal("LaunchRope: rotary_dim too large");
  const uint64_t work = static_cast<uint64_t>(args.n_tokens) * args.n_heads * (args.rotary_dim / 2);
  RopeKernel<<<GridFor(work), kRowThreads, 0, stream>>>(args);
  return CudaStatus(cudaGetLastError(), "RoPE kernel launch");
}

Status LaunchDeviation(const void* fresh, const void* base, const DestAddressing& addr,
                       uint32_t dtype, uint32_t channels, uint32_t token_begin, uint32_t n,
                       float* out, cudaStream_t stream) {
  if (n == 0) return Status::OK();
  const uint64_t warps_per_block = kRowThreads / 32;
  const uint64_t blocks = (n + warps_per_block - 1) / warps_per_block;
  DeviationKernel<<<static_cast<unsigned>(blocks), kRowThreads, 0, stream>>>(
      fresh, base, addr, dtype, channels, token_begin, n, out);
  return CudaStatus(cudaGetLastError(), "deviation kernel launch");
}

Status LaunchScatter(const void* rows, const uint32_t* tokens, uint32_t n, void* base,
                     const DestAddressing& addr, uint32_t dtype, uint32_t channels,
                     cudaStream_t stream) {
  if (n == 0) return Status::OK();
  const unsigned grid = GridFor(static_cast<uint64_t>(n) * channels);
  if (ElemSize(dtype) == 4) {
    ScatterKernel<uint32_t>
        <<<grid, kRowThreads, 0, stream>>>(static_cast<const uint32_t*>(rows), tokens, n,
                                           static_cast<uint32_t*>(base), addr, channels);
  } else {
    ScatterKernel<uint16_t>
        <<<grid, kRowThreads, 0, stream>>>(static_cast<const uint16_t*>(rows), tokens, n,
                                           static_cast<uint16_t*>(base), addr, channels);
  }
  return CudaStatus(cudaGetLastError(), "scatter kernel launch");
}

Status LaunchGather(const void* base, const DestAddressing& addr, uint32_t dtype, uint32_t channels,
                    uint32_t n, void* out, cudaStream_t stream) {
  if (n == 0) return Status::OK();
  const unsigned grid = GridFor(static_cast<uint64_t>(n) * channels);
  if (ElemSize(dtype) == 4) {
    GatherKernel<uint32_t><<<grid, kRowThreads, 0, stream>>>(
        static_cast<const uint32_t*>(base), addr, channels, n, static_cast<uint32_t*>(out));
  } else {
    GatherKernel<uint16_t><<<grid, kRowThreads, 0, stream>>>(
        static_cast<const uint16_t*>(base), addr, channels, n, static_cast<uint16_t*>(out));
  }
  return CudaStatus(cudaGetLastError(), "gather kernel launch");
}

}  // namespace kdn::libkdn
