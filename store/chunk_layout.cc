#include "store/chunk_layout.h"

#include <algorithm>
#include <string>

#include "iouring/aligned_buffer.h"

namespace kdn::store {

std::vector<ChunkLayout::Piece> ChunkLayout::Map(uint64_t off, uint64_t len) const {
  std::vector<Piece> out;
  if (len == 0 || off >= size || len > size - off) return out;
  uint64_t start = 0;  // chunk offset of the current extent
  for (const ChunkExtent& e : extents) {
    uint64_t end = start + e.len;
    if (end > off && start < off + len) {
      uint64_t a = std::max(off, start), b = std::min(off + len, end);
      out.push_back(Piece{e.seg, e.off + (a - start), b - a});
    }
    if (end >= off + len) break;
    start = end;
  }
  uint64_t covered = 0;
  for (const Piece& p : out) covered += p.len;
  if (covered != len) return {};  // extents do not cover the range (CheckLayout says why)
  out.back().len = io::AlignUp(out.back().len, io::kDirectAlign);
  return out;
}

Status CheckLayout(const ChunkLayout& layout) {
  uint64_t covered = 0;
  for (size_t i = 0; i < layout.extents.size(); ++i) {
    const ChunkExtent& e = layout.extents[i];
    const bool last = i + 1 == layout.extents.size();
    if (e.len == 0 || e.off % io::kDirectAlign != 0 || (!last && e.len % io::kDirectAlign != 0)) {
      return Status::Corruption("chunk " + layout.id.ToHex() + ": malformed extent " +
                                std::to_string(i));
    }
    covered += e.len;
  }
  if (covered != layout.size) {
    return Status::Corruption("chunk " + layout.id.ToHex() + ": extents cover " +
                              std::to_string(covered) + " of " + std::to_string(layout.size) +
                              " bytes");
  }
  if (layout.block_bytes == 0 || layout.block_bytes % io::kDirectAlign != 0 ||
      layout.sums.size() != layout.blocks()) {
    return Status::Corruption("chunk " + layout.id.ToHex() + ": malformed block checksums");
  }
  return Status::OK();
}

std::vector<std::byte> EncodeSums(const std::vector<uint64_t>& sums) {
  std::vector<std::byte> out(sums.size() * 8);
  for (size_t i = 0; i < sums.size(); ++i) {
    for (int b = 0; b < 8; ++b) out[i * 8 + b] = static_cast<std::byte>(sums[i] >> (8 * b));
  }
  return out;
}

bool DecodeSums(std::span<const std::byte> blob, std::vector<uint64_t>* sums) {
  if (blob.size() % 8 != 0) return false;
  sums->resize(blob.size() / 8);
  for (size_t i = 0; i < sums->size(); ++i) {
    uint64_t v = 0;
    for (int b = 7; b >= 0; --b) v = (v << 8) | static_cast<uint8_t>(blob[i * 8 + b]);
    (*sums)[i] = v;
  }
  return true;
}

std::vector<ChunkExtent> ExtentsFor(const std::vector<PhysExtent>& allocation, uint64_t size) {
  std::vector<ChunkExtent> out;
  uint64_t left = size;
  for (const PhysExtent& p : allocation) {
    if (left == 0) break;
    uint64_t n = std::min(left, p.len);
    out.push_back(ChunkExtent{p.seg, p.off, n});
    left -= n;
  }
  return out;
}

std::shared_ptr<const ChunkLayout> LayoutCache::Find(const ChunkId& id) {
  std::lock_guard lock(mu_);
  auto it = map_.find(id);
  if (it == map_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return *it->second;
}

void LayoutCache::Insert(std::shared_ptr<const ChunkLayout> layout, uint64_t generation) {
  std::lock_guard lock(mu_);
  if (generation != generation_ || capacity_ == 0) return;
  auto it = map_.find(layout->id);
  if (it != map_.end()) {
    lru_.erase(it->second);
    map_.erase(it);
  }
  lru_.push_front(layout);
  map_[layout->id] = lru_.begin();
  while (map_.size() > capacity_) {
    map_.erase(lru_.back()->id);
    lru_.pop_back();
  }
}

void LayoutCache::Erase(const ChunkId& id) {
  std::lock_guard lock(mu_);
  ++generation_;
  auto it = map_.find(id);
  if (it == map_.end()) return;
  lru_.erase(it->second);
  map_.erase(it);
}

}  // namespace kdn::store
