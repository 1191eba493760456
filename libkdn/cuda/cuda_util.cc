#include "libkdn/cuda/cuda_util.h"

#include "libkdn/api_status.h"

namespace kdn::libkdn {

Status CudaStatus(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return Status::OK();
  (void)cudaGetLastError();  // a non-sticky error must not fail the next, unrelated call
  std::string msg = what + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
  if (err == cudaErrorMemoryAllocation) return NoMemory(std::move(msg));
  return CudaFailure(std::move(msg));
}

ScopedDevice::ScopedDevice(int device) {
  status_ = CudaStatus(cudaGetDevice(&previous_), "cudaGetDevice");
  if (status_.ok() && previous_ != device) {
    status_ = CudaStatus(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
    if (!status_.ok()) previous_ = -1;
  } else {
    previous_ = -1;  // nothing to restore
  }
}

ScopedDevice::~ScopedDevice() {
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

Status CudaEvent::Create() {
  Reset();
  return CudaStatus(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate");
}

void CudaEvent::Reset() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
  event_ = nullptr;
}

Status StreamBuffer::Allocate(cudaMemPool_t pool, size_t bytes, cudaStream_t stream) {
  Free();
  KDN_RETURN_IF_ERROR(CudaStatus(cudaMallocFromPoolAsync(&ptr_, bytes, pool, stream),
                                 "cudaMallocFromPoolAsync(" + std::to_string(bytes) + " bytes)"));
  stream_ = stream;
  return Status::OK();
}

void StreamBuffer::Free() {
  if (ptr_ != nullptr) (void)cudaFreeAsync(ptr_, stream_);
  ptr_ = nullptr;
}

}  // namespace kdn::libkdn
