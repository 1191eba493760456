#include "store/chunk_id.h"

#include <xxhash.h>

#include <algorithm>
#ifdef KDN_XXH_X86_DISPATCH
// libxxhash's own runtime dispatch (scalar, SSE2, AVX2 or AVX-512 by cpuid, chosen at the first
// call): the same hashes, 2-3x faster than the SSE2 baseline the library is built for. Hashing is
// a put's only CPU pass over the bytes and every read's verification.
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#define KDN_XXH3_128 XXH3_128bits_dispatch
#define KDN_XXH3_128_UPDATE XXH3_128bits_update_dispatch
#define KDN_XXH3_64 XXH3_64bits_dispatch
#define KDN_XXH3_64_UPDATE XXH3_64bits_update_dispatch
#else
#define KDN_XXH3_128 XXH3_128bits
#define KDN_XXH3_128_UPDATE XXH3_128bits_update
#define KDN_XXH3_64 XXH3_64bits
#define KDN_XXH3_64_UPDATE XXH3_64bits_update
#endif

namespace kdn::store {

ChunkId HashChunk(std::span<const std::byte> bytes) {
  XXH128_hash_t h = KDN_XXH3_128(bytes.data(), bytes.size());
  return ChunkId{h.low64, h.high64};
}

ChunkHasher::ChunkHasher() : state_(XXH3_createState()) {
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

ChunkHasher::~ChunkHasher() {
  XXH3_freeState(static_cast<XXH3_state_t*>(state_));
}

void ChunkHasher::Update(std::span<const std::byte> bytes) {
  KDN_XXH3_128_UPDATE(static_cast<XXH3_state_t*>(state_), bytes.data(), bytes.size());
}

ChunkId ChunkHasher::Finish() {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return ChunkId{h.low64, h.high64};
}

uint64_t BlockSum(std::span<const std::byte> bytes) {
  return KDN_XXH3_64(bytes.data(), bytes.size());
}

ContentHasher::ContentHasher(uint64_t block_bytes)
    : block_bytes_(block_bytes), block_state_(XXH3_createState()) {
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(block_state_));
}

ContentHasher::~ContentHasher() {
  XXH3_freeState(static_cast<XXH3_state_t*>(block_state_));
}

void ContentHasher::Update(std::span<const std::byte> bytes) {
  auto* state = static_cast<XXH3_state_t*>(block_state_);
  // Block by block, so that the block's second pass reads it from cache.
  while (!bytes.empty()) {
    const uint64_t n = std::min<uint64_t>(bytes.size(), block_bytes_ - in_block_);
    auto part = bytes.first(n);
    whole_.Update(part);
    if (in_block_ == 0 && n == block_bytes_) {
      sums_.push_back(BlockSum(part));
    } else {
      KDN_XXH3_64_UPDATE(state, part.data(), part.size());
      in_block_ += n;
      if (in_block_ == block_bytes_) {
        sums_.push_back(XXH3_64bits_digest(state));
        XXH3_64bits_reset(state);
        in_block_ = 0;
      }
    }
    bytes = bytes.subspan(n);
  }
}

ChunkId ContentHasher::Finish(std::vector<uint64_t>* sums) {
  if (in_block_ > 0) {
    sums_.push_back(XXH3_64bits_digest(static_cast<XXH3_state_t*>(block_state_)));
    in_block_ = 0;
  }
  *sums = std::move(sums_);
  sums_.clear();
  return whole_.Finish();
}

IdKey ToKey(const Hash128& id) {
  IdKey key;
  for (int i = 0; i < 8; ++i) {
    key[i] = static_cast<std::byte>(id.hi >> (56 - 8 * i));
    key[8 + i] = static_cast<std::byte>(id.lo >> (56 - 8 * i));
  }
  return key;
}

bool FromKey(std::span<const std::byte> key, Hash128* id) {
  if (key.size() != 16) return false;
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; ++i) {
    hi = (hi << 8) | static_cast<uint8_t>(key[i]);
    lo = (lo << 8) | static_cast<uint8_t>(key[8 + i]);
  }
  *id = Hash128{lo, hi};
  return true;
}

}  // namespace kdn::store
