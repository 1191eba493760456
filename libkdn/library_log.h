// libkdn's logger: the callback an engine installed with kdn_set_log_callback (kdn.h), or nothing.
//
// The engine library is loaded into someone else's process: it never writes to that process's
// stderr. What it has to say beyond a kdn_status (a fast path turned off, and why) goes to the
// callback when there is one, and nowhere otherwise.
#ifndef KDN_LIBKDN_LIBRARY_LOG_H_
#define KDN_LIBKDN_LIBRARY_LOG_H_

#include <string_view>

#include "kdn/kdn.h"
#include "kdn/logger.h"

namespace kdn::libkdn {

// Replaces the process-wide callback (NULL removes it). Waits for calls in progress.
void SetLogCallback(kdn_log_fn fn, void* user);
// The library's Logger: forwards to the callback.
Logger* LibraryLogger();

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_LIBRARY_LOG_H_
