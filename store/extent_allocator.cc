#include "store/extent_allocator.h"

#include <algorithm>
#include <string>

namespace kdn::store {

void ExtentAllocator::AddSegment(uint32_t seg, uint64_t bytes) {
  holes_[seg];
  total_ += bytes;
  if (bytes > 0 && Insert(PhysExtent{seg, 0, bytes})) free_ += bytes;
}

bool ExtentAllocator::MarkUsed(const PhysExtent& e) {
  auto seg = holes_.find(e.seg);
  if (seg == holes_.end() || e.len == 0) return false;
  auto& holes = seg->second;
  auto it = holes.upper_bound(e.off);
  if (it == holes.begin()) return false;
  --it;
  uint64_t hole_off = it->first, hole_len = it->second;
  if (e.off < hole_off || e.off + e.len > hole_off + hole_len) return false;
  holes.erase(it);
  if (e.off > hole_off) holes[hole_off] = e.off - hole_off;
  if (e.off + e.len < hole_off + hole_len)
    holes[e.off + e.len] = hole_off + hole_len - e.off - e.len;
  free_ -= e.len;
  live_ += e.len;
  return true;
}

Result<std::vector<PhysExtent>> ExtentAllocator::Allocate(uint64_t bytes) {
  if (bytes == 0) return std::vector<PhysExtent>();
  if (bytes > free_) {
    return Status::NoSpace("segments have " + std::to_string(free_) + " bytes free, need " +
                           std::to_string(bytes));
  }
  // First fit in segment order keeps consecutive puts next to each other on disk.
  for (auto& [seg, holes] : holes_) {
    for (auto& [off, len] : holes) {
      if (len < bytes) continue;
      PhysExtent e{seg, off, bytes};
      MarkUsed(e);
      return std::vector<PhysExtent>{e};
    }
  }
  // Fragmented: take holes in order until the request is covered.
  std::vector<PhysExtent> out;
  uint64_t need = bytes;
  for (auto& [seg, holes] : holes_) {
    while (need > 0 && !holes.empty()) {
      auto it = holes.begin();
      PhysExtent e{seg, it->first, std::min(need, it->second)};
      MarkUsed(e);
      out.push_back(e);
      need -= e.len;
    }
    if (need == 0) break;
  }
  return out;
}

void ExtentAllocator::Free(const std::vector<PhysExtent>& extents) {
  for (const PhysExtent& e : extents) {
    live_ -= e.len;
    if (Insert(e)) free_ += e.len;
  }
}

void ExtentAllocator::Retire(std::vector<PhysExtent> extents, uint64_t epoch) {
  uint64_t bytes = 0;
  for (const PhysExtent& e : extents) bytes += e.len;
  live_ -= bytes;
  pending_ += bytes;
  retired_.push_back(Retired{epoch, std::move(extents)});
}

void ExtentAllocator::Reclaim(uint64_t oldest_active) {
  auto keep = std::partition(retired_.begin(), retired_.end(),
                             [&](const Retired& r) { return r.epoch >= oldest_active; });
  for (auto it = keep; it != retired_.end(); ++it) {
    for (const PhysExtent& e : it->extents) {
      pending_ -= e.len;
      if (Insert(e)) free_ += e.len;
    }
  }
  retired_.erase(keep, retired_.end());
}

bool ExtentAllocator::OverlapsFree(const PhysExtent& e) const {
  auto seg = holes_.find(e.seg);
  if (seg == holes_.end()) return false;
  const auto& holes = seg->second;
  auto it = holes.lower_bound(e.off + e.len);  // first hole starting at or after the end
  if (it == holes.begin()) return false;
  --it;  // the last hole starting before the end
  return it->first + it->second > e.off;
}

bool ExtentAllocator::Insert(const PhysExtent& e) {
  auto& holes = holes_[e.seg];
  uint64_t off = e.off, len = e.len;
  auto next = holes.lower_bound(off);
  if (next != holes.end() && next->first < off + len) return false;  // overlaps a hole
  if (next != holes.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second > off) return false;
    if (prev->first + prev->second == off) {
      off = prev->first;
      len += prev->second;
      holes.erase(prev);
    }
  }
  if (next != holes.end() && next->first == off + len) {
    len += next->second;
    holes.erase(next);
  }
  holes[off] = len;
  return true;
}

}  // namespace kdn::store
