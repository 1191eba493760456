#include "store/chunk_layout.h"

#include <algorithm>
#include <string>

#include "iouring/aligned_buffer.h"

namespace kdn::store {

Status CheckLayout(const ChunkLayout& layout) {
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

std::shared_ptr<const ChunkLayout> LayoutCache::Find(const ChunkId& id) {
  MutexLock lock(mu_);
  auto it = map_.find(id);
  if (it == map_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return *it->second;
}

void LayoutCache::Insert(std::shared_ptr<const ChunkLayout> layout, uint64_t generation) {
  MutexLock lock(mu_);
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
  MutexLock lock(mu_);
  ++generation_;
  auto it = map_.find(id);
  if (it == map_.end()) return;
  lru_.erase(it->second);
  map_.erase(it);
}

}  // namespace kdn::store

namespace kdn::store {

void LayoutCache::Clear() {
  MutexLock lock(mu_);
  ++generation_;
  map_.clear();
  lru_.clear();
}

}  // namespace kdn::store
