// CUDA runtime calls as Status values, and RAII owners of CUDA resources.
#ifndef KDN_LIBKDN_CUDA_CUDA_UTIL_H_
#define KDN_LIBKDN_CUDA_CUDA_UTIL_H_

#include <cuda_runtime_api.h>

#include <string>

#include "kdn/status.h"

namespace kdn::libkdn {

// OK for cudaSuccess; NoMemory for an allocation failure; a CUDA failure (KDN_E_CUDA) naming
// `what` and the error otherwise. Clears the runtime's (non-sticky) last error.
Status CudaStatus(cudaError_t err, const std::string& what);

#define KDN_CUDA_RETURN_IF_ERROR(call) KDN_RETURN_IF_ERROR(::kdn::libkdn::CudaStatus((call), #call))

// Makes `device` current for this thread for the scope, then restores the previous one (the
// engine's threads keep the device they had).
class ScopedDevice {
 public:
  explicit ScopedDevice(int device);
  ~ScopedDevice();
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  const Status& status() const { return status_; }

 private:
  int previous_ = -1;
  Status status_;
};

class CudaEvent {
 public:
  CudaEvent() = default;
  ~CudaEvent() { Reset(); }
  CudaEvent(CudaEvent&& o) noexcept : event_(o.event_) { o.event_ = nullptr; }
  CudaEvent& operator=(CudaEvent&& o) noexcept {
    if (this != &o) {
      Reset();
      event_ = o.event_;
      o.event_ = nullptr;
    }
    return *this;
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  // An event without timing (the cheapest kind to record and wait on).
  Status Create();
  cudaEvent_t get() const { return event_; }
  void Reset();

 private:
  cudaEvent_t event_ = nullptr;
};

// Device memory from a stream-ordered pool: allocated and freed in the order of `stream`, so a
// buffer can be freed right after the last kernel that reads it is enqueued.
class StreamBuffer {
 public:
  StreamBuffer() = default;
  ~StreamBuffer() { Free(); }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  Status Allocate(cudaMemPool_t pool, size_t bytes, cudaStream_t stream);
  // Enqueues the free on the stream it was allocated on.
  void Free();
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_CUDA_UTIL_H_
