// Chunk ids (SHA-256, OpenSSL's libcrypto: SHA-NI where the CPU has it) and the database's key
// forms: hashing, hex text, keys.
#ifndef KDN_STORE_CHUNK_ID_H_
#define KDN_STORE_CHUNK_ID_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kdn/store.h"

namespace kdn::store {

// SHA-256 of the bytes.
ChunkId HashChunk(std::span<const std::byte> bytes);

// Incremental form of HashChunk, for content read in pieces.
class ChunkHasher {
 public:
  ChunkHasher();
  ~ChunkHasher();
  ChunkHasher(const ChunkHasher&) = delete;
  ChunkHasher& operator=(const ChunkHasher&) = delete;
  void Update(std::span<const std::byte> bytes);
  ChunkId Finish();

 private:
  void* state_;  // EVP_MD_CTX
};

// xxh3-64 of one block of stored bytes (the per-block read checksum).
uint64_t BlockSum(std::span<const std::byte> bytes);

// The id of a chunk and the BlockSum of each of its `block_bytes` blocks in one pass, over pieces
// of any size fed in order (as they are written out).
class ContentHasher {
 public:
  explicit ContentHasher(uint64_t block_bytes);
  ~ContentHasher();
  ContentHasher(const ContentHasher&) = delete;
  ContentHasher& operator=(const ContentHasher&) = delete;
  void Update(std::span<const std::byte> bytes);
  // The id; `sums` gets one sum per block (the last one of whatever the block holds).
  ChunkId Finish(std::vector<uint64_t>* sums);

 private:
  ChunkHasher whole_;
  uint64_t block_bytes_;
  uint64_t in_block_ = 0;  // bytes of the current block fed to block_state_
  void* block_state_;      // XXH3_state_t for a block that arrives in several pieces
  std::vector<uint64_t> sums_;
};

// Prefix hashes and model fingerprints (xxh3-128): big-endian hi then lo, so byte order equals
// hex order and keys sort like their text. Chunk ids are stored as their 32 bytes.
using IdKey = std::array<std::byte, 16>;
IdKey ToKey(const Hash128& id);
bool FromKey(std::span<const std::byte> key, Hash128* id);
bool FromKey(std::span<const std::byte> key, ChunkId* id);

struct IdHasher {
  size_t operator()(const Hash128& id) const { return static_cast<size_t>(id.lo ^ (id.hi * 31)); }
  size_t operator()(const ChunkId& id) const {
    size_t h;  // a cryptographic hash: any 8 of its bytes are well mixed
    std::memcpy(&h, id.bytes.data(), sizeof(h));
    return h;
  }
};

}  // namespace kdn::store

#endif  // KDN_STORE_CHUNK_ID_H_
