// No exception crosses the library's API: an allocation that fails (a huge but legal size, or a
// machine out of memory) becomes a NoSpace status instead of terminating the process.
#ifndef KDN_STORE_FORMAT_GUARD_ALLOC_H_
#define KDN_STORE_FORMAT_GUARD_ALLOC_H_

#include <new>
#include <string>
#include <string_view>

#include "kdn/status.h"

namespace kdn {

// Runs f() (returning Status or Result<T>) and maps std::bad_alloc (and an impossible size) to
// Status::NoMemory.
template <typename F>
auto GuardAlloc(std::string_view what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::NoMemory(std::string(what) + ": out of memory");
  } catch (const std::length_error&) {
    return Status::NoMemory(std::string(what) + ": size too large");
  }
}

}  // namespace kdn

#endif  // KDN_STORE_FORMAT_GUARD_ALLOC_H_
