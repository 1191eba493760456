// Wall-clock time in nanoseconds since the epoch, for inode and chunk times.
#ifndef KDN_STORE_CLOCK_H_
#define KDN_STORE_CLOCK_H_

#include <time.h>

#include <cstdint>

namespace kdn::store {

inline int64_t NowNs() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace kdn::store

#endif  // KDN_STORE_CLOCK_H_
