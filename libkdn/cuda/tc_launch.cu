// tc decode kernels: see tc_launch.h.
#include <string>
#include <vector>

#include "libkdn/cuda/cuda_util.h"
#include "libkdn/cuda/tc_launch.h"
#include "store/format/tc_math.h"

namespace kdn::libkdn {
namespace {

constexpr uint32_t kThreads = 128;

// One thread per segment. A bad segment records the lowest such index in *bad.
__global__ void __launch_bounds__(kThreads)
    TcSymbolsKernel(const __grid_constant__ tc::TcView v, int16_t* q, uint32_t* bad) {
  const uint32_t seg = blockIdx.x * blockDim.x + threadIdx.x;
  if (seg >= v.n_segments) return;
  int16_t* out = q + static_cast<uint64_t>(seg) * v.seg_tokens * v.channels;
  if (!tc::DecodeSegment(v, seg, out)) atomicMin(bad, seg);
}

// One thread per (token, head).
__global__ void __launch_bounds__(kThreads)
    TcRowsKernel(const __grid_constant__ tc::TcView v, const int16_t* q, uint32_t out_dtype,
                 uint8_t* out) {
  const uint32_t heads = v.channels / v.head_dim;
  const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<uint64_t>(v.tokens) * heads) return;
  const uint32_t t = static_cast<uint32_t>(i / heads), h = static_cast<uint32_t>(i % heads);
  float x[tc::kMaxHeadDim];
  tc::ReconstructHead(v, q + static_cast<uint64_t>(t) * v.channels, t, h, x);
  const uint32_t esize = out_dtype == 3 ? 4 : 2;
  tc::StoreFloats(x, v.head_dim, out_dtype,
                  out + (static_cast<uint64_t>(t) * v.channels + h * v.head_dim) * esize);
}

template <typename T>
size_t Append(std::vector<uint8_t>* buf, const T* data, size_t n) {
  const size_t at = (buf->size() + 15) / 16 * 16;
  buf->resize(at + n * sizeof(T));
  if (n) memcpy(buf->data() + at, data, n * sizeof(T));
  return at;
}

}  // namespace

Status DecodeTcOnDevice(const codec_internal::TcBlock& block, const uint8_t* device_block,
                        uint32_t out_dtype, void* out, cudaStream_t stream) {
  const tc::TcView& hv = block.view();
  // The host tables in one buffer, copied up once.
  std::vector<uint8_t> aux;
  const size_t mean_at = Append(&aux, block.mean().data(), block.mean().size());
  const size_t step_at = Append(&aux, block.step().data(), block.step().size());
  const size_t table_at = Append(&aux, block.table_of().data(), block.table_of().size());
  const size_t slots_at = Append(&aux, block.slots().data(), block.slots().size());
  const size_t esc_at = Append(&aux, block.escape().data(), block.escape().size());
  const size_t seg_at = Append(&aux, block.seg_begin().data(), block.seg_begin().size());
  const size_t rope_at = Append(&aux, block.rope_cs().data(), block.rope_cs().size());
  const uint64_t q_bytes = static_cast<uint64_t>(hv.n_segments) * hv.seg_tokens * hv.channels * 2;
  const size_t bad_at = (aux.size() + 15) / 16 * 16;
  const size_t q_at = bad_at + 16;
  uint8_t* d = nullptr;
  KDN_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&d), q_at + q_bytes, stream));
  Status st = [&]() -> Status {
    KDN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(d, aux.data(), aux.size(), cudaMemcpyHostToDevice, stream));
    KDN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d + bad_at, 0xff, 4, stream));
    tc::TcView v = hv;
    v.mean = reinterpret_cast<const float*>(d + mean_at);
    v.step = reinterpret_cast<const float*>(d + step_at);
    v.table_of = d + table_at;
    v.slots = reinterpret_cast<const uint32_t*>(d + slots_at);
    v.escape = reinterpret_cast<const uint32_t*>(d + esc_at);
    v.seg_begin = reinterpret_cast<const uint64_t*>(d + seg_at);
    v.rope_cs = hv.rotary_dim ? reinterpret_cast<const float*>(d + rope_at) : nullptr;
    v.segments = device_block + block.segments_offset();
    int16_t* q = reinterpret_cast<int16_t*>(d + q_at);
    uint32_t* bad = reinterpret_cast<uint32_t*>(d + bad_at);
    TcSymbolsKernel<<<(hv.n_segments + kThreads - 1) / kThreads, kThreads, 0, stream>>>(v, q, bad);
    KDN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    const uint64_t items = static_cast<uint64_t>(hv.tokens) * (hv.channels / hv.head_dim);
    TcRowsKernel<<<static_cast<unsigned>((items + kThreads - 1) / kThreads), kThreads, 0,
                   stream>>>(v, q, out_dtype, static_cast<uint8_t*>(out));
    KDN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    uint32_t first_bad = 0;
    KDN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(&first_bad, bad, 4, cudaMemcpyDeviceToHost, stream));
    KDN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    if (first_bad != 0xffffffffu) {
      return Status::Corruption("tc segment " + std::to_string(first_bad) +
                                ": rANS stream corrupt or truncated");
    }
    return Status::OK();
  }();
  const cudaError_t freed = cudaFreeAsync(d, stream);
  if (st.ok() && freed != cudaSuccess) return CudaStatus(freed, "cudaFreeAsync");
  return st;
}

}  // namespace kdn::libkdn
