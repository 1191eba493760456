// The segment files (seg/NNNNNN.seg): preallocated files that hold chunk bytes, opened with
// O_DIRECT for the lifetime of the store. Segments are found by listing seg/ at open (their size
// is the file's size), so creating one needs no metadata transaction; a segment whose creation
// was interrupted is simply smaller, or empty and removed.
#ifndef KDN_STORE_SEGMENT_SET_H_
#define KDN_STORE_SEGMENT_SET_H_

#include <cstdint>
#include <shared_mutex>
#include <string>
#include <vector>

#include "kdn/status.h"
#include "store/format/file_io.h"

namespace kdn::store {

struct SegmentInfo {
  uint32_t id = 0;
  uint64_t bytes = 0;
  int fd = -1;  // owned by the SegmentSet, open for its lifetime
};

class SegmentSet {
 public:
  SegmentSet() = default;
  SegmentSet(const SegmentSet&) = delete;
  SegmentSet& operator=(const SegmentSet&) = delete;

  // Opens every segment in `seg_dir` (created if missing).
  Status Open(const std::string& seg_dir);
  // Creates the next segment with `bytes` allocated (fallocate), synced with its directory.
  Result<SegmentInfo> Create(uint64_t bytes);

  std::vector<SegmentInfo> List() const;
  size_t count() const;
  // The descriptor of segment `id`, or -1.
  int fd(uint32_t id) const;
  uint64_t bytes(uint32_t id) const;
  std::string path(uint32_t id) const;
  uint64_t total_bytes() const;

 private:
  const SegmentInfo* Find(uint32_t id) const;  // under mu_
  std::string dir_;
  UniqueFd dir_fd_;
  mutable std::shared_mutex mu_;
  std::vector<SegmentInfo> segments_;  // sorted by id
  std::vector<UniqueFd> segment_fds_;  // what segments_[i].fd borrows
  uint32_t next_id_ = 1;
};

}  // namespace kdn::store

#endif  // KDN_STORE_SEGMENT_SET_H_
