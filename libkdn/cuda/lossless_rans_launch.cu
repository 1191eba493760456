// lossless rANS decode kernel: see lossless_rans_launch.h.
#include <cstring>
#include <string>
#include <vector>

#include "libkdn/cuda/cuda_util.h"
#include "libkdn/cuda/lossless_rans_launch.h"
#include "store/format/lossless_rans.h"

namespace kdn::libkdn {
namespace {

constexpr uint32_t kThreads = 128;

// One thread per segment. A bad segment records the lowest such index in *bad.
__global__ void __launch_bounds__(kThreads)
    LosslessRansKernel(const __grid_constant__ lrans::PlanesView v, uint8_t* planes,
                       uint32_t* bad) {
  const uint32_t seg = blockIdx.x * blockDim.x + threadIdx.x;
  if (seg >= v.n_segments) return;
  if (!lrans::DecodePlaneSegment(v, seg, planes)) atomicMin(bad, seg);
}

}  // namespace

Status DecodeLosslessRansOnDevice(const codec_internal::LosslessRansBlock& block,
                                  const uint8_t* device_block, uint8_t* planes,
                                  cudaStream_t stream) {
  const lrans::PlanesView& hv = block.view();
  // Slots, segment offsets and the bad-segment word in one buffer, copied up once.
  const size_t slots_bytes = block.slots().size() * sizeof(uint32_t);
  const size_t seg_at = (slots_bytes + 15) / 16 * 16;
  const size_t seg_bytes = block.seg_begin().size() * sizeof(uint64_t);
  const size_t bad_at = (seg_at + seg_bytes + 15) / 16 * 16;
  std::vector<uint8_t> aux(bad_at);
  std::memcpy(aux.data(), block.slots().data(), slots_bytes);
  std::memcpy(aux.data() + seg_at, block.seg_begin().data(), seg_bytes);
  uint8_t* d = nullptr;
  KDN_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&d), bad_at + 16, stream));
  Status st = [&]() -> Status {
    KDN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(d, aux.data(), aux.size(), cudaMemcpyHostToDevice, stream));
    KDN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d + bad_at, 0xff, 4, stream));
    lrans::PlanesView v = hv;
    v.slots = reinterpret_cast<const uint32_t*>(d);
    v.seg_begin = reinterpret_cast<const uint64_t*>(d + seg_at);
    v.segments = device_block + block.segments_offset();
    uint32_t* bad = reinterpret_cast<uint32_t*>(d + bad_at);
    LosslessRansKernel<<<(hv.n_segments + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        v, planes, bad);
    KDN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    uint32_t first_bad = 0;
    KDN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(&first_bad, bad, 4, cudaMemcpyDeviceToHost, stream));
    KDN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    if (first_bad != 0xffffffffu) {
      return Status::Corruption("lossless rANS segment " + std::to_string(first_bad) +
                                ": stream corrupt or truncated");
    }
    return Status::OK();
  }();
  const cudaError_t freed = cudaFreeAsync(d, stream);
  if (st.ok() && freed != cudaSuccess) return CudaStatus(freed, "cudaFreeAsync");
  return st;
}

}  // namespace kdn::libkdn
