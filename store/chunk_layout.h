// How to read a chunk and check it: its open file and block checksums, cached in memory (the
// cache holds descriptors, so it is kept small).
#ifndef KDN_STORE_CHUNK_LAYOUT_H_
#define KDN_STORE_CHUNK_LAYOUT_H_

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/store.h"
#include "store/chunk_id.h"
#include "store/format/file_io.h"

namespace kdn::store {

// Per-block checksum granularity of new chunks: small enough that a 4 KiB read verifies little
// more than it returns, large enough that the list stays short (64 KiB per GiB).
inline constexpr uint32_t kBlockBytes = 128 * 1024;

struct ChunkLayout {
  ChunkId id;
  uint64_t size = 0;
  uint32_t block_bytes = kBlockBytes;
  std::vector<uint64_t> sums;  // one per block
  bool kv = false;
  // The chunk file, open with O_DIRECT for the store's reads. Held by the layout so that a read
  // that found it keeps reading the same bytes even if the chunk is deleted meanwhile (unlinked).
  UniqueFd fd;
  std::string path;  // of that file, for messages

  uint64_t blocks() const { return (size + block_bytes - 1) / block_bytes; }
};

// Checks the block checksums against the size. OK or kCorruption naming the chunk.
Status CheckLayout(const ChunkLayout& layout);

// The sums blob (little-endian u64 each) and back.
std::vector<std::byte> EncodeSums(const std::vector<uint64_t>& sums);
bool DecodeSums(std::span<const std::byte> blob, std::vector<uint64_t>* sums);

// Recently read layouts. Entries are dropped when their chunk is deleted; a lookup that raced
// with a deletion does not insert (generation check), so a stale layout never outlives its chunk.
class LayoutCache {
 public:
  explicit LayoutCache(size_t capacity) : capacity_(capacity) {}
  std::shared_ptr<const ChunkLayout> Find(const ChunkId& id);
  uint64_t generation() const {
    MutexLock lock(mu_);
    return generation_;
  }
  // Inserts unless a deletion happened since `generation`.
  void Insert(std::shared_ptr<const ChunkLayout> layout, uint64_t generation);
  void Erase(const ChunkId& id);
  void Clear();

 private:
  using Lru = std::list<std::shared_ptr<const ChunkLayout>>;
  mutable Mutex mu_;
  const size_t capacity_;
  uint64_t generation_ KDN_GUARDED_BY(mu_) = 0;
  Lru lru_ KDN_GUARDED_BY(mu_);  // most recent first
  std::unordered_map<ChunkId, Lru::iterator, IdHasher> map_ KDN_GUARDED_BY(mu_);
};

}  // namespace kdn::store

#endif  // KDN_STORE_CHUNK_LAYOUT_H_
