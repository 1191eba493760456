#include "gpu/api_status.h"

#include <string>

namespace kdn::gpu {
namespace {

thread_local std::string tls_last_error;

}  // namespace

kdn_status ToApiStatus(const Status& s) {
  if (s.ok()) return KDN_OK;
  // The errno tags first: they refine IOError (and an OS read that ran out of memory is the same
  // condition as a failed allocation).
  if (s.sys_errno() == ENOMEM) return KDN_E_NO_MEMORY;
  if (s.code() == Code::kIOError && s.sys_errno() == kCudaErrno) return KDN_E_CUDA;
  switch (s.code()) {
    case Code::kOk:
      return KDN_OK;
    case Code::kInvalidArgument:
      return KDN_E_INVALID_ARG;
    case Code::kNotFound:
      return KDN_E_NOT_FOUND;
    case Code::kCorruption:
      return KDN_E_CORRUPT;
    case Code::kUnsupported:
      return KDN_E_UNSUPPORTED;
    case Code::kModelMismatch:
      return KDN_E_MODEL_MISMATCH;
    case Code::kNoSpace:
      return KDN_E_NO_SPACE;
    case Code::kInternal:
      return KDN_E_INTERNAL;
    case Code::kAlreadyExists:
    case Code::kIOError:
    case Code::kBusy:
    case Code::kPermissionDenied:
      return KDN_E_IO;
  }
  return KDN_E_INTERNAL;
}

kdn_status Fail(const Status& s) {
  const kdn_status code = ToApiStatus(s);
  if (code != KDN_OK) tls_last_error = s.message();
  return code;
}

const char* LastError() {
  return tls_last_error.c_str();
}

}  // namespace kdn::gpu
