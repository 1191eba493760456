// How errors cross the C ABI: a kdn_status code for programs, a thread-local message for people.
//
// Inside libkdn/ every function returns kdn::Status; its code (status.h) maps onto kdn_status here,
// in one place. Out of memory is Code::kNoMemory (Status::NoMemory), a failed CUDA call
// Code::kDevice (Status::Device): neither rides in the errno slot.
#ifndef KDN_LIBKDN_API_STATUS_H_
#define KDN_LIBKDN_API_STATUS_H_

#include <cerrno>
#include <string>

#include "kdn/kdn.h"
#include "kdn/status.h"

namespace kdn::libkdn {

inline Status NoMemory(std::string msg) {
  return Status::NoMemory(std::move(msg));
}
inline Status CudaFailure(std::string msg) {
  return Status::Device(std::move(msg));
}

kdn_status ToApiStatus(const Status& s);

// Records `s` as the calling thread's last error (when it is not OK) and returns its code.
kdn_status Fail(const Status& s);
const char* LastError();

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_API_STATUS_H_
