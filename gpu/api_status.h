// How errors cross the C ABI: a kdn_status code for programs, a thread-local message for people.
//
// Inside gpu/ every function returns kdn::Status. kdn::Code has no name for two conditions the C
// API reports on their own (out of memory, a failed CUDA call); inside this library those are
// Status values whose errno slot says which (ENOMEM, and kCudaErrno), built only by the helpers
// below, so that the mapping to kdn_status stays in one place.
#ifndef KDN_GPU_API_STATUS_H_
#define KDN_GPU_API_STATUS_H_

#include <cerrno>
#include <string>

#include "kdn/kdn.h"
#include "kdn/status.h"

namespace kdn::gpu {

// errno tag of a failed CUDA call. EREMOTEIO ("remote I/O error": the device is remote to the
// host) is never returned by the reads this library does on local files.
inline constexpr int kCudaErrno = EREMOTEIO;

inline Status NoMemory(std::string msg) {
  return Status::IOError(std::move(msg), ENOMEM);
}
inline Status CudaFailure(std::string msg) {
  return Status::IOError(std::move(msg), kCudaErrno);
}

kdn_status ToApiStatus(const Status& s);

// Records `s` as the calling thread's last error (when it is not OK) and returns its code.
kdn_status Fail(const Status& s);
const char* LastError();

}  // namespace kdn::gpu

#endif  // KDN_GPU_API_STATUS_H_
