// Free-space map of the segments. Not thread-safe: the store guards it with a mutex.
//
// Rebuilt at open from the committed extents (everything else is free: that is the whole of
// recovery). Space released by a commit is "retired" with a read epoch and becomes free only when
// every read that may still be using it has finished (ReadEpochs); space that was reserved but
// never published is free again at once.
#ifndef KDN_STORE_EXTENT_ALLOCATOR_H_
#define KDN_STORE_EXTENT_ALLOCATOR_H_

#include <cstdint>
#include <map>
#include <vector>

#include "kdn/status.h"

namespace kdn::store {

// A 4 KiB-aligned piece of a segment.
struct PhysExtent {
  uint32_t seg = 0;
  uint64_t off = 0;
  uint64_t len = 0;
  friend bool operator==(const PhysExtent&, const PhysExtent&) = default;
};

class ExtentAllocator {
 public:
  void AddSegment(uint32_t seg, uint64_t bytes);
  // Rebuild: marks a committed extent as used. False when it is not entirely free (outside its
  // segment, or overlapping another extent).
  bool MarkUsed(const PhysExtent& e);

  // Takes `bytes` (a multiple of 4 KiB) from free space: one extent when a hole is large enough,
  // else pieces in segment order. kNoSpace when the free space is smaller.
  Result<std::vector<PhysExtent>> Allocate(uint64_t bytes);
  // Returns never-published space at once.
  void Free(const std::vector<PhysExtent>& extents);
  // Released by a commit: free once no read older than `epoch` is running.
  void Retire(std::vector<PhysExtent> extents, uint64_t epoch);
  // Frees what was retired with an epoch below `oldest_active` (the oldest running read).
  void Reclaim(uint64_t oldest_active);

  // True when any byte of `e` is free (fsck: committed extents must never be).
  bool OverlapsFree(const PhysExtent& e) const;

  uint64_t live_bytes() const { return live_; }        // allocated, not released
  uint64_t pending_bytes() const { return pending_; }  // released, not yet reusable
  uint64_t free_bytes() const { return free_; }        // reusable now
  uint64_t segment_bytes() const { return total_; }

 private:
  bool Insert(const PhysExtent& e);  // into the free map, coalescing; false on overlap
  struct Retired {
    uint64_t epoch;
    std::vector<PhysExtent> extents;
  };
  std::map<uint32_t, std::map<uint64_t, uint64_t>> holes_;  // seg -> (offset -> length)
  std::vector<Retired> retired_;
  uint64_t live_ = 0, pending_ = 0, free_ = 0, total_ = 0;
};

}  // namespace kdn::store

#endif  // KDN_STORE_EXTENT_ALLOCATOR_H_
