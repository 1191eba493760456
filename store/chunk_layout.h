// Where a chunk's bytes are and how to check them: what a read needs, cached in memory.
#ifndef KDN_STORE_CHUNK_LAYOUT_H_
#define KDN_STORE_CHUNK_LAYOUT_H_

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kdn/store.h"
#include "store/chunk_id.h"
#include "store/extent_allocator.h"

namespace kdn::store {

// Per-block checksum granularity of new chunks: small enough that a 4 KiB read verifies little
// more than it returns, large enough that the list stays short (64 KiB per GiB).
inline constexpr uint32_t kBlockBytes = 128 * 1024;

// One extent as the database records it: `len` bytes of the chunk at `off` in segment `seg`.
struct ChunkExtent {
  uint32_t seg = 0;
  uint64_t off = 0;
  uint64_t len = 0;
};

struct ChunkLayout {
  ChunkId id;
  uint64_t size = 0;
  uint32_t block_bytes = kBlockBytes;
  std::vector<uint64_t> sums;        // one per block
  std::vector<ChunkExtent> extents;  // in chunk order
  bool kv = false;

  uint64_t blocks() const { return (size + block_bytes - 1) / block_bytes; }
  // Segments and offsets of chunk bytes [off, off + len), the last piece extended to a 4 KiB
  // multiple (the allocation always covers it). Empty when the range is not inside the chunk.
  struct Piece {
    uint32_t seg;
    uint64_t phys;
    uint64_t len;
  };
  std::vector<Piece> Map(uint64_t off, uint64_t len) const;
};

// Checks the extents against the size: contiguous cover, aligned, all but the last a 4 KiB
// multiple. OK or kCorruption naming the chunk.
Status CheckLayout(const ChunkLayout& layout);

// The sums blob (little-endian u64 each) and back.
std::vector<std::byte> EncodeSums(const std::vector<uint64_t>& sums);
bool DecodeSums(std::span<const std::byte> blob, std::vector<uint64_t>* sums);

// Chunk extents from allocated space: the allocation in order, lengths cut to `size` bytes.
std::vector<ChunkExtent> ExtentsFor(const std::vector<PhysExtent>& allocation, uint64_t size);

// Recently read layouts. Entries are dropped when their chunk is deleted; a lookup that raced
// with a deletion does not insert (generation check), so a stale layout never outlives its chunk.
class LayoutCache {
 public:
  explicit LayoutCache(size_t capacity) : capacity_(capacity) {}
  std::shared_ptr<const ChunkLayout> Find(const ChunkId& id);
  uint64_t generation() const {
    std::lock_guard lock(mu_);
    return generation_;
  }
  // Inserts unless a deletion happened since `generation`.
  void Insert(std::shared_ptr<const ChunkLayout> layout, uint64_t generation);
  void Erase(const ChunkId& id);

 private:
  using Lru = std::list<std::shared_ptr<const ChunkLayout>>;
  mutable std::mutex mu_;
  size_t capacity_;
  uint64_t generation_ = 0;
  Lru lru_;  // most recent first
  std::unordered_map<ChunkId, Lru::iterator, IdHasher> map_;
};

}  // namespace kdn::store

#endif  // KDN_STORE_CHUNK_LAYOUT_H_
