#include "libkdn/api_status.h"

#include <string>

namespace kdn::libkdn {
namespace {

thread_local std::string tls_last_error;

}  // namespace

kdn_status ToApiStatus(const Status& s) {
  if (s.ok()) return KDN_OK;
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
    case Code::kNoMemory:
      return KDN_E_NO_MEMORY;
    case Code::kDevice:
      return KDN_E_CUDA;
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

}  // namespace kdn::libkdn
