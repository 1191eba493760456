// Runs a Status-returning function and turns any exception into a Status: work on the workers
// and every C API entry point go through this, so that nothing throws across a thread or the ABI.
#ifndef KDN_LIBKDN_GUARDED_H_
#define KDN_LIBKDN_GUARDED_H_

#include <exception>
#include <new>
#include <string>

#include "libkdn/api_status.h"
#include "kdn/status.h"

namespace kdn::libkdn {

template <typename Fn>
Status Guarded(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return NoMemory("out of memory");
  } catch (const std::exception& e) {
    return Status::Internal(std::string("unexpected exception: ") + e.what());
  } catch (...) {
    return Status::Internal("unexpected exception");
  }
}

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_GUARDED_H_
